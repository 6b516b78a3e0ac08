#!/usr/bin/env bash
# The Java reader: Apache Iceberg (iceberg-core, iceberg-data) reads tables.
#   run.sh --build                     fetch the jars (once) and compile
#   run.sh WAREHOUSE TABLE [TABLE...]  print "TABLE <name> <rows>" per table
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
cache=$root/.cache/iceberg-java
if [ "${1:-}" = "--build" ]; then
    if [ ! -f "$cache/lib/.done" ]; then
        mkdir -p "$cache/lib"
        mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
            -DoutputDirectory="$cache/lib" -DincludeScope=runtime
        touch "$cache/lib/.done"
    fi
    src=$here/src/main/java/lake/ReadTables.java
    if [ ! -f "$cache/classes/lake/ReadTables.class" ] || [ "$src" -nt "$cache/classes/lake/ReadTables.class" ]; then
        mkdir -p "$cache/classes"
        javac -d "$cache/classes" -cp "$cache/lib/*" "$src"
    fi
    exit 0
fi
exec java -cp "$cache/classes:$cache/lib/*" lake.ReadTables "$@"
