package lake;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.HashSet;
import java.util.Set;

import org.apache.iceberg.BaseTable;
import org.apache.iceberg.Snapshot;
import org.apache.iceberg.StaticTableOperations;
import org.apache.iceberg.Table;
import org.apache.iceberg.data.IcebergGenerics;
import org.apache.iceberg.data.Record;
import org.apache.iceberg.io.CloseableIterable;
import org.apache.iceberg.io.FileIO;
import org.apache.iceberg.io.InputFile;
import org.apache.iceberg.io.OutputFile;

/**
 * Reads every row of every table named on the command line with Iceberg's own
 * Java library, from the newest vN.metadata.json of WAREHOUSE/TABLE, and
 * prints "TABLE name rows". Also reads the first snapshot (time travel) and
 * checks that (kafka_partition, kafka_offset) never repeats.
 */
public final class ReadTables {
    /** A FileIO over the local file system, without Hadoop. */
    static final class LocalIO implements FileIO {
        private static String path(String uri) {
            if (uri.startsWith("file://")) return uri.substring("file://".length());
            if (uri.startsWith("file:")) return uri.substring("file:".length());
            return uri;
        }

        @Override public InputFile newInputFile(String location) {
            return org.apache.iceberg.Files.localInput(new File(path(location)));
        }

        @Override public OutputFile newOutputFile(String location) {
            return org.apache.iceberg.Files.localOutput(new File(path(location)));
        }

        @Override public void deleteFile(String location) {
            new File(path(location)).delete();
        }
    }

    private static String currentMetadata(File tableDir) throws Exception {
        File md = new File(tableDir, "metadata");
        long n = Long.parseLong(new String(Files.readAllBytes(new File(md, "version-hint.text").toPath()),
                StandardCharsets.UTF_8).trim());
        while (new File(md, "v" + (n + 1) + ".metadata.json").exists()) n++;
        return new File(md, "v" + n + ".metadata.json").getAbsolutePath();
    }

    public static void main(String[] args) throws Exception {
        File wh = new File(args[0]);
        FileIO io = new LocalIO();
        for (int i = 1; i < args.length; i++) {
            String name = args[i];
            String meta = currentMetadata(new File(wh, name));
            Table t = new BaseTable(new StaticTableOperations(meta, io), name);
            long rows = 0;
            Set<String> keys = new HashSet<>();
            try (CloseableIterable<Record> it = IcebergGenerics.read(t).build()) {
                for (Record r : it) {
                    rows++;
                    String k = r.getField("kafka_partition") + "/" + r.getField("kafka_offset");
                    if (!keys.add(k)) throw new IllegalStateException(name + ": duplicate " + k);
                    // Every column is materialised through the table schema.
                    for (int f = 0; f < r.size(); f++) r.get(f);
                }
            }
            long total = Long.parseLong(t.currentSnapshot().summary().get("total-records"));
            if (total != rows) throw new IllegalStateException(name + ": " + rows + " rows, summary says " + total);
            Snapshot first = null;
            for (Snapshot s : t.snapshots()) { first = s; break; }
            long firstRows = 0;
            try (CloseableIterable<Record> it = IcebergGenerics.read(t).useSnapshot(first.snapshotId()).build()) {
                for (Record r : it) firstRows++;
            }
            if (firstRows != Long.parseLong(first.summary().get("total-records")))
                throw new IllegalStateException(name + ": first snapshot reads " + firstRows);
            int snaps = 0;
            for (Snapshot s : t.snapshots()) snaps++;
            System.out.println("SNAPSHOTS " + name + " " + snaps);
            System.out.println("TABLE " + name + " " + rows);
        }
    }
}
