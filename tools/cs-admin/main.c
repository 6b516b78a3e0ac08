/*
 * cs-admin: the small Kafka administration the scripts and tests need.
 *
 *   cs-admin wait          -b HOST:PORT [-t SECONDS]
 *   cs-admin create-topics -b HOST:PORT NAME:PARTITIONS[:compact] ...
 *   cs-admin offsets       -b HOST:PORT TOPIC     (end offsets, one per line)
 *
 * Exit codes: 0 success, 1 failure (one line on stderr), 2 usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "cm_time.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cs-admin wait -b BOOTSTRAP [-t SECONDS]\n"
            "       cs-admin create-topics -b BOOTSTRAP NAME:PARTITIONS[:compact] ...\n"
            "       cs-admin offsets -b BOOTSTRAP TOPIC\n"
            "Kafka administration for scripts and tests. Topics that exist already\n"
            "are left as they are (create-topics is idempotent).\n");
}

static rd_kafka_t *admin_new(const char *bootstrap)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr))) {
        fprintf(stderr, "cs-admin: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk)
        fprintf(stderr, "cs-admin: %s\n", errstr);
    return rk;
}

/* Waits until the cluster answers a metadata request with at least one broker. */
static int cmd_wait(rd_kafka_t *rk, int secs)
{
    int64_t deadline = cm_mono_ms() + (int64_t)secs * 1000;
    while (cm_mono_ms() < deadline) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 1, NULL, &md, 2000);
        if (!err) {
            int brokers = md->broker_cnt;
            rd_kafka_metadata_destroy(md);
            if (brokers > 0)
                return 0;
        }
        usleep(200 * 1000);
    }
    fprintf(stderr, "cs-admin: no Kafka broker answered within %d s\n", secs);
    return 1;
}

static int cmd_create(rd_kafka_t *rk, int n, char **specs)
{
    char errstr[512];
    rd_kafka_NewTopic_t **topics = calloc((size_t)n, sizeof(*topics));
    int rc = 1;
    if (!topics)
        return 1;
    for (int i = 0; i < n; i++) {
        char name[256];
        int parts = 1;
        char extra[32] = "";
        if (sscanf(specs[i], "%255[^:]:%d:%31s", name, &parts, extra) < 2 || parts < 1) {
            fprintf(stderr, "cs-admin: bad topic spec '%s' (want NAME:PARTITIONS[:compact])\n",
                    specs[i]);
            goto out;
        }
        topics[i] = rd_kafka_NewTopic_new(name, parts, 1, errstr, sizeof(errstr));
        if (!topics[i]) {
            fprintf(stderr, "cs-admin: %s: %s\n", name, errstr);
            goto out;
        }
        if (strcmp(extra, "compact") == 0)
            rd_kafka_NewTopic_set_config(topics[i], "cleanup.policy", "compact");
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_operation_timeout(opts, 30000, errstr, sizeof(errstr));
    rd_kafka_CreateTopics(rk, topics, (size_t)n, opts, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 60000);
    rd_kafka_AdminOptions_destroy(opts);
    if (!ev) {
        fprintf(stderr, "cs-admin: create-topics timed out\n");
        rd_kafka_queue_destroy(q);
        goto out;
    }
    if (rd_kafka_event_error(ev)) {
        fprintf(stderr, "cs-admin: create-topics: %s\n", rd_kafka_event_error_string(ev));
    } else {
        size_t cnt;
        const rd_kafka_topic_result_t **res =
            rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
        rc = 0;
        for (size_t i = 0; i < cnt; i++) {
            rd_kafka_resp_err_t e = rd_kafka_topic_result_error(res[i]);
            if (e && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
                fprintf(stderr, "cs-admin: %s: %s\n", rd_kafka_topic_result_name(res[i]),
                        rd_kafka_topic_result_error_string(res[i]));
                rc = 1;
            }
        }
    }
    rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
out:
    for (int i = 0; i < n; i++)
        rd_kafka_NewTopic_destroy(topics[i]);
    free(topics);
    return rc;
}

static int cmd_offsets(rd_kafka_t *rk, const char *topic)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
    int rc = 1;
    if (err || md->topic_cnt != 1 || md->topics[0].err) {
        fprintf(stderr, "cs-admin: %s: %s\n", topic,
                rd_kafka_err2str(err ? err : md->topic_cnt ? md->topics[0].err
                                                           : RD_KAFKA_RESP_ERR_UNKNOWN));
        goto out;
    }
    rc = 0;
    for (int p = 0; p < md->topics[0].partition_cnt; p++) {
        int64_t lo, hi;
        err = rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000);
        if (err) {
            fprintf(stderr, "cs-admin: %s[%d]: %s\n", topic, p, rd_kafka_err2str(err));
            rc = 1;
            break;
        }
        printf("%d %lld %lld\n", p, (long long)lo, (long long)hi);
    }
out:
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return rc;
}

int main(int argc, char **argv)
{
    const char *bootstrap = getenv("KAFKA_BOOTSTRAP");
    int secs = 60;
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    int known = !strcmp(cmd, "wait") || !strcmp(cmd, "create-topics") || !strcmp(cmd, "offsets");
    if (!known) {
        fprintf(stderr, "cs-admin: unknown command '%s' (try --help)\n", cmd);
        return 2;
    }
    int opt;
    opterr = 0;
    optind = 2;
    while ((opt = getopt(argc, argv, "b:t:")) != -1) {
        switch (opt) {
        case 'b': bootstrap = optarg; break;
        case 't': secs = atoi(optarg); break;
        default:
            fprintf(stderr, "cs-admin: unknown option '%s' (try --help)\n", argv[optind - 1]);
            return 2;
        }
    }
    if (!bootstrap) {
        fprintf(stderr, "cs-admin: no bootstrap servers (-b or KAFKA_BOOTSTRAP)\n");
        return 2;
    }
    if (!strcmp(cmd, "offsets") && optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    rd_kafka_t *rk = admin_new(bootstrap);
    if (!rk)
        return 1;
    int rc;
    if (!strcmp(cmd, "wait"))
        rc = cmd_wait(rk, secs);
    else if (!strcmp(cmd, "create-topics"))
        rc = cmd_create(rk, argc - optind, argv + optind);
    else
        rc = cmd_offsets(rk, argv[optind]);
    rd_kafka_destroy(rk);
    return rc;
}
