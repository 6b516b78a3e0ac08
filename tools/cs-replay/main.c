/*
 * cs-replay: copies every record of one topic into another exactly once
 * (key, value, headers, timestamp), e.g. the DLQ back into raw after a fix.
 *
 *   cs-replay --from TOPIC --to TOPIC [--group G] [--transactional-id ID]
 *             [--strip-header NAME]... [--exit-when-idle SECONDS] [--max-rate N]
 *
 * Built on cm_txloop: the copy and the input offsets are committed in one
 * transaction, so a kill at any instant neither loses nor repeats a record;
 * run it again and it goes on where the last commit left off.
 *
 * Exit codes: 0 stopped cleanly (SIGTERM/SIGINT or idle), 1 runtime
 * failure, 2 bad usage or configuration.
 */
#include <getopt.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cm_config.h"
#include "cm_kafka.h"
#include "cm_log.h"
#include "cm_time.h"

#define RP_NAME "cs-replay"
#define RP_MAX_STRIP 16

typedef struct rp_config {
    char *bootstrap;
    char *log_level;
    int64_t commit_interval_ms;
} rp_config_t;

static const cm_config_entry_t rp_config_table[] = {
    {CM_CFG_STR, "KAFKA_BOOTSTRAP", NULL, offsetof(rp_config_t, bootstrap), 1, 4096,
     "Kafka bootstrap servers, host:port[,host:port] (required)", NULL, false},
    {CM_CFG_ENUM, "CS_REPLAY_LOG_LEVEL", "info", offsetof(rp_config_t, log_level), 0, 0,
     "lowest level of the JSON log lines written to stderr", "debug|info|warn|error", false},
    {CM_CFG_MS, "CS_REPLAY_COMMIT_INTERVAL", "100ms", offsetof(rp_config_t, commit_interval_ms), 10,
     60000, "how often the open transaction is committed", NULL, false},
    {0},
};

typedef struct rp {
    const char *from;
    const char *to;
    const char *strip[RP_MAX_STRIP];
    int strip_count;
    int64_t idle_ms;            /* 0: never stop on idle */
    int64_t next_idle_check_ms; /* mono */
    double max_rate;            /* records per second; 0: no limit */
    int64_t rate_start_us;      /* mono */
    uint64_t rate_count;
    int64_t last_activity_ms; /* mono */
    int64_t next_progress_ms; /* mono */
    uint64_t last_logged_in;
    cm_txloop_t *loop;
} rp_t;

static volatile sig_atomic_t rp_stop;

static void rp_on_signal(int sig)
{
    (void)sig;
    rp_stop = 1;
}

static void rp_usage(FILE *f)
{
    fprintf(f,
            "cs-replay: copies every record of one Kafka topic into another, exactly once\n"
            "(key, value, headers, timestamp; partition chosen by key).\n"
            "\n"
            "Usage: cs-replay --from TOPIC --to TOPIC [options]\n"
            "\n"
            "  --from TOPIC              topic to read (read_committed)\n"
            "  --to TOPIC                topic to write (transactionally)\n"
            "  --group G                 consumer group; its committed offsets are where a\n"
            "                            restart goes on (default cs-replay.FROM.TO)\n"
            "  --transactional-id ID     unique per running instance, the same across its\n"
            "                            restarts (default: the group id); a second instance\n"
            "                            in the same group needs its own\n"
            "  --strip-header NAME       drop this header from the copies (repeatable, up\n"
            "                            to %d), e.g. the DLQ's 'reason'\n"
            "  --exit-when-idle SECONDS  stop (exit 0) once this instance holds every\n"
            "                            partition of --from and has seen no record for\n"
            "                            SECONDS (caught up); for a lone instance, else\n"
            "                            stop instances with SIGTERM\n"
            "  --max-rate N              copy at most N records per second\n"
            "  -h, --help                this text\n"
            "\n"
            "Environment:\n"
            "  KAFKA_BOOTSTRAP           bootstrap servers host:port[,...] (required)\n"
            "  CS_REPLAY_LOG_LEVEL       debug|info|warn|error (default info)\n"
            "  CS_REPLAY_COMMIT_INTERVAL transaction commit interval (default 100ms)\n"
            "  RDKAFKA_<NAME>            handed to librdkafka as property <name>, lower-cased,\n"
            "                            '_' turned into '.' (\"__\" gives '_'), e.g.\n"
            "                            RDKAFKA_SASL_MECHANISMS=PLAIN\n"
            "\n"
            "Exit codes: 0 stopped cleanly (SIGTERM/SIGINT, idle), 1 failure, 2 bad usage.\n",
            RP_MAX_STRIP);
}

static bool rp_stripped(const rp_t *rp, const char *name)
{
    for (int i = 0; i < rp->strip_count; i++)
        if (strcmp(rp->strip[i], name) == 0)
            return true;
    return false;
}

/* Keeps the copy under --max-rate so a replay does not flood what reads the
 * target. Sleeps in short steps: the loop must still commit and tick. */
static void rp_throttle(rp_t *rp)
{
    if (rp->max_rate <= 0)
        return;
    int64_t now = cm_mono_us();
    if (rp->rate_count == 0 || now - rp->rate_start_us > 10 * 1000000LL) {
        rp->rate_start_us = now;
        rp->rate_count = 0;
    }
    rp->rate_count++;
    int64_t due = rp->rate_start_us + (int64_t)((double)rp->rate_count * 1e6 / rp->max_rate);
    int64_t wait = due - now;
    if (wait > 50000)
        wait = 50000;
    if (wait > 0)
        usleep((useconds_t)wait);
}

static cm_err_t rp_process(cm_txloop_t *loop, const rd_kafka_message_t *msg, void *opaque)
{
    rp_t *rp = opaque;
    rp_throttle(rp);
    cm_kafka_header_t hdrs[64];
    size_t nh = 0;
    rd_kafka_headers_t *rh = NULL;
    rp->last_activity_ms = cm_mono_ms();
    if (rd_kafka_message_headers(msg, &rh) == RD_KAFKA_RESP_ERR_NO_ERROR && rh) {
        const char *name;
        const void *val;
        size_t size;
        for (size_t i = 0; !rd_kafka_header_get_all(rh, i, &name, &val, &size); i++) {
            if (rp_stripped(rp, name))
                continue;
            if (nh == sizeof(hdrs) / sizeof(hdrs[0])) {
                /* A copy without some headers would not be a copy. */
                cm_log_error("record has too many headers to copy", "partition", "%d",
                             (int)msg->partition, "offset", "%ld", (long)msg->offset, NULL);
                return CM_ERR_TOO_LARGE;
            }
            hdrs[nh++] = (cm_kafka_header_t){.name = name, .value = val, .len = size};
        }
    }
    rd_kafka_timestamp_type_t tstype;
    int64_t ts = rd_kafka_message_timestamp(msg, &tstype);
    cm_kafka_msg_t out = {
        .topic = rp->to,
        .partition = CM_KAFKA_PARTITION_ANY,
        .key = msg->key,
        .key_len = msg->key_len,
        .value = msg->payload,
        .value_len = msg->len,
        .headers = hdrs,
        .header_count = nh,
        .timestamp_ms = tstype == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? 0 : ts,
    };
    cm_err_t err = cm_txloop_send(loop, &out);
    if (err == CM_ERR_INVALID)
        cm_log_error("record cannot be copied", "partition", "%d", (int)msg->partition, "offset",
                     "%ld", (long)msg->offset, NULL);
    return err;
}

static void rp_tick(cm_txloop_t *loop, int64_t now_ms, void *opaque)
{
    rp_t *rp = opaque;
    (void)now_ms;
    int64_t now = cm_mono_ms();
    if (now < rp->next_progress_ms)
        return;
    rp->next_progress_ms = now + 10000;
    cm_txloop_stats_t st;
    cm_txloop_get_stats(loop, &st);
    if (st.msgs_in == rp->last_logged_in)
        return;
    rp->last_logged_in = st.msgs_in;
    cm_log_info("progress", "records_in", "%ld", (long)st.msgs_in, "records_out", "%ld",
                (long)st.msgs_produced, "commits", "%ld", (long)st.commits, "aborts", "%ld",
                (long)st.aborts, "partitions", "%d", st.assigned_partitions, NULL);
}

static void rp_on_abort(cm_txloop_t *loop, const rd_kafka_topic_partition_list_t *parts,
                        void *opaque)
{
    /* Nothing to undo: the copy keeps no state. */
    (void)loop, (void)parts, (void)opaque;
}

/* The idle clock starts again at each assignment: a partition that just
 * arrived has not been read yet. */
static cm_err_t rp_on_assign(cm_txloop_t *loop, const rd_kafka_topic_partition_list_t *parts,
                             void *opaque)
{
    rp_t *rp = opaque;
    (void)loop, (void)parts;
    rp->last_activity_ms = cm_mono_ms();
    return CM_OK;
}

/* Partition count of a topic, -1 when unknown (no such topic, no broker). */
static int rp_partition_count(rd_kafka_t *rk, const char *topic)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    int n = -1;
    if (rkt && !rd_kafka_metadata(rk, 0, rkt, &md, 5000)) {
        if (md->topic_cnt == 1 && !md->topics[0].err)
            n = md->topics[0].partition_cnt;
        rd_kafka_metadata_destroy(md);
    }
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    return n;
}

/*
 * Idle means "a lone instance has caught up": no record for idle_ms while
 * this instance holds every partition of --from. Holding them all matters: a
 * killed predecessor keeps its partitions until its session times out, and
 * stopping before they come over would leave them uncopied.
 */
static bool rp_should_stop(void *opaque)
{
    rp_t *rp = opaque;
    int64_t now = cm_mono_ms();
    if (rp->idle_ms <= 0 || now - rp->last_activity_ms < rp->idle_ms ||
        now < rp->next_idle_check_ms)
        return false;
    rp->next_idle_check_ms = now + 1000;
    cm_txloop_stats_t st;
    cm_txloop_get_stats(rp->loop, &st);
    int parts = rp_partition_count(cm_txloop_consumer(rp->loop), rp->from);
    if (parts <= 0 || st.assigned_partitions < parts)
        return false;
    cm_log_info("idle: stopping", "idle_ms", "%ld", (long)rp->idle_ms, "partitions", "%d", parts,
                NULL);
    return true;
}

static int rp_parse_args(int argc, char **argv, rp_t *rp, const char **group, const char **txn_id)
{
    static const struct option longopts[] = {
        {"from", required_argument, NULL, 'f'},
        {"to", required_argument, NULL, 't'},
        {"group", required_argument, NULL, 'g'},
        {"transactional-id", required_argument, NULL, 'x'},
        {"strip-header", required_argument, NULL, 's'},
        {"exit-when-idle", required_argument, NULL, 'i'},
        {"max-rate", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case 'f': rp->from = optarg; break;
        case 't': rp->to = optarg; break;
        case 'g': *group = optarg; break;
        case 'x': *txn_id = optarg; break;
        case 's':
            if (rp->strip_count == RP_MAX_STRIP) {
                fprintf(stderr, RP_NAME ": at most %d --strip-header options\n", RP_MAX_STRIP);
                return 2;
            }
            rp->strip[rp->strip_count++] = optarg;
            break;
        case 'i': {
            char *end = NULL;
            double s = strtod(optarg, &end);
            if (!end || *end || end == optarg || s <= 0 || s > 86400) {
                fprintf(stderr,
                        RP_NAME ": --exit-when-idle wants seconds in (0, 86400], got '%s'\n",
                        optarg);
                return 2;
            }
            rp->idle_ms = (int64_t)(s * 1000);
            break;
        }
        case 'r': {
            char *end = NULL;
            double r = strtod(optarg, &end);
            if (!end || *end || end == optarg || r <= 0 || r > 1e9) {
                fprintf(stderr, RP_NAME ": --max-rate wants records per second > 0, got '%s'\n",
                        optarg);
                return 2;
            }
            rp->max_rate = r;
            break;
        }
        case 'h': rp_usage(stdout); return 1;
        case ':':
            fprintf(stderr, RP_NAME ": option '%s' needs a value (try --help)\n", argv[optind - 1]);
            return 2;
        default:
            fprintf(stderr, RP_NAME ": unknown option '%s' (try --help)\n", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, RP_NAME ": unknown option '%s' (try --help)\n", argv[optind]);
        return 2;
    }
    if (!rp->from || !*rp->from || !rp->to || !*rp->to) {
        fprintf(stderr, RP_NAME ": --from TOPIC and --to TOPIC are required (try --help)\n");
        return 2;
    }
    if (strcmp(rp->from, rp->to) == 0) {
        fprintf(stderr, RP_NAME ": --from and --to name the same topic\n");
        return 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    rp_t rp = {0};
    rp_config_t cfg = {0};
    cm_passthrough_t pt = {0};
    const char *group = NULL, *txn_id = NULL;
    char errstr[512], group_buf[600];
    int rc = rp_parse_args(argc, argv, &rp, &group, &txn_id);
    if (rc)
        return rc == 1 ? 0 : 2;
    if (cm_config_load(rp_config_table, &cfg, NULL, &pt, errstr, sizeof(errstr))) {
        fprintf(stderr, RP_NAME ": %s\n", errstr);
        return 2;
    }
    if (!cfg.bootstrap) {
        fprintf(stderr, RP_NAME ": KAFKA_BOOTSTRAP is required (host:port)\n");
        rc = 2;
        goto out;
    }
    cm_log_init(RP_NAME, (cm_log_level_t)cm_log_level_parse(cfg.log_level));
    if (!group) {
        snprintf(group_buf, sizeof(group_buf), "cs-replay.%s.%s", rp.from, rp.to);
        group = group_buf;
    }
    if (!txn_id)
        txn_id = group;

    struct sigaction sa = {0};
    sa.sa_handler = rp_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    rp.last_activity_ms = cm_mono_ms();
    const char *topics[] = {rp.from};
    cm_txloop_opts_t o = {
        .bootstrap = cfg.bootstrap,
        .pt = &pt,
        .group_id = group,
        .topics = topics,
        .topic_count = 1,
        .transactional_id = txn_id,
        .client_id = RP_NAME,
        .commit_interval_ms = (int)cfg.commit_interval_ms,
        .stop_flag = &rp_stop,
        .should_stop = rp_should_stop,
        .cb = {.process = rp_process,
               .on_assign = rp_on_assign,
               .on_abort = rp_on_abort,
               .tick = rp_tick},
        .opaque = &rp,
    };
    cm_log_info("starting", "from", "%s", rp.from, "to", "%s", rp.to, "group", "%s", group,
                "transactional_id", "%s", txn_id, "strip_headers", "%d", rp.strip_count, NULL);
    rp.loop = cm_txloop_new(&o, errstr, sizeof(errstr));
    if (!rp.loop) {
        cm_log_error("cannot start", "error", "%s", errstr, NULL);
        /* A bad RDKAFKA_ property is a configuration error: exit 2. */
        rc = strncmp(errstr, "kafka property", 14) == 0 ? 2 : 1;
        if (rc == 2)
            fprintf(stderr, RP_NAME ": %s\n", errstr);
        goto out;
    }
    for (int i = 0; i < 2; i++) {
        const char *t = i ? rp.to : rp.from;
        if (rp_partition_count(cm_txloop_consumer(rp.loop), t) <= 0) {
            cm_log_error("topic not found", "topic", "%s", t, NULL);
            fprintf(stderr, RP_NAME ": topic '%s' does not exist (or no broker answered)\n", t);
            rc = 1;
            goto out;
        }
    }
    cm_err_t err = cm_txloop_run(rp.loop);
    rc = err ? 1 : 0;
    if (err)
        cm_log_error("stopped on error", "error", "%s", cm_err_str(err), NULL);
out:
    cm_txloop_destroy(rp.loop);
    cm_config_free(rp_config_table, &cfg);
    cm_passthrough_free(&pt);
    return rc;
}
