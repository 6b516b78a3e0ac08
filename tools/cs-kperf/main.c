/*
 * cs-kperf: the benchmarks' Kafka side.
 *
 *   cs-kperf fill    -b B -t TOPIC -n N [-u USERS] [-s SEED] [--start-ms T]
 *       produces N valid events (Avro, Confluent framing, keyed by user_id) of
 *       U simulated users in event-time order; reports the produce rate.
 *   cs-kperf consume -b B -t TOPIC [-n N]
 *       reads the topic from the beginning to its end (or N records) with a
 *       bare librdkafka consumer: the physical limit of a consuming stage.
 *   cs-kperf produce -b B -t FROM --to TOPIC [-n N]
 *       loads N records of FROM into memory, then produces them to TOPIC as
 *       fast as librdkafka can (acks=all, idempotent, lz4): the physical limit
 *       of a producing stage for the same messages.
 *
 * Output: one JSON object on stdout with records, bytes, seconds, rate and
 * CPU seconds. librdkafka is used directly, without libcommon's Kafka layer,
 * so that the figures are the library's and the broker's alone.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <librdkafka/rdkafka.h>

#include "cm_avro.h"
#include "cm_event.h"
#include "cm_time.h"

typedef struct kp_opts {
    const char *bootstrap;
    const char *topic;
    const char *to;
    int64_t count;
    int64_t users;
    uint64_t seed;
    int64_t start_ms;
} kp_opts_t;

static double kp_cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void kp_report(const char *what, int64_t records, int64_t bytes, int64_t us, double cpu)
{
    double secs = (double)us / 1e6;
    printf("{\"mode\":\"%s\",\"records\":%" PRId64 ",\"bytes\":%" PRId64
           ",\"seconds\":%.3f,\"rate\":%.0f,\"cpu_seconds\":%.3f,\"rate_per_cpu_second\":%.0f}\n",
           what, records, bytes, secs, secs > 0 ? (double)records / secs : 0.0, cpu,
           cpu > 0 ? (double)records / cpu : 0.0);
}

static rd_kafka_t *kp_producer(const char *bootstrap)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *props[][2] = {
        {"bootstrap.servers", bootstrap}, {"enable.idempotence", "true"}, {"acks", "all"},
        {"compression.type", "lz4"},      {"linger.ms", "5"},             {"batch.size", "1048576"},
        {"queue.buffering.max.messages", "1000000"}, {"partitioner", "murmur2_random"},
        {"log_level", "3"},
    };
    for (size_t i = 0; i < sizeof(props) / sizeof(props[0]); i++) {
        if (rd_kafka_conf_set(conf, props[i][0], props[i][1], errstr, sizeof(errstr))) {
            fprintf(stderr, "cs-kperf: %s\n", errstr);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk)
        fprintf(stderr, "cs-kperf: %s\n", errstr);
    return rk;
}

/* Produces one record, serving delivery reports while the queue is full. */
static int kp_send(rd_kafka_t *rk, const char *topic, const void *key, size_t klen,
                   const void *val, size_t vlen)
{
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, klen),
            RD_KAFKA_V_VALUE((void *)val, vlen), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_END);
        if (!err)
            return 0;
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            fprintf(stderr, "cs-kperf: produce: %s\n", rd_kafka_err2str(err));
            return -1;
        }
        rd_kafka_poll(rk, 10);
    }
}

static uint64_t kp_rand(uint64_t *s)
{
    /* xorshift64*: fast, deterministic from the seed. */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

static const char *const kp_types[] = {"page_view", "page_view", "page_view", "product_view",
                                       "product_view", "click", "add_to_cart", "purchase"};
static const char *const kp_devices[] = {"desktop", "mobile", "tablet"};
static const char *const kp_countries[] = {"US", "DE", "FR", "GB", "JP", "BR", "IN", "NL"};

static int kp_fill(const kp_opts_t *o)
{
    rd_kafka_t *rk = kp_producer(o->bootstrap);
    if (!rk)
        return 1;
    uint64_t rng = o->seed ? o->seed : 42;
    int64_t users = o->users > 0 ? o->users : 10000;
    /* Simulated clock: events spread so that the stream spans ~1 event per
     * 2 ms of event time, ending near start_ms + count * 2. */
    int64_t t = o->start_ms ? o->start_ms : cm_now_ms() - o->count * 2 - 3600 * 1000;
    cm_event_t ev;
    cm_event_init(&ev);
    cm_buf_t out;
    cm_buf_init(&out, 0);
    char id[40], uid[32], url[64], prod[32];
    int64_t bytes = 0;
    int64_t t0 = cm_mono_us();
    double c0 = kp_cpu_seconds();
    int rc = 0;
    for (int64_t i = 0; i < o->count; i++) {
        uint64_t r = kp_rand(&rng);
        int64_t u = (int64_t)(r % (uint64_t)users);
        t += (int64_t)(kp_rand(&rng) % 5);
        cm_event_reset(&ev);
        snprintf(id, sizeof(id), "e%016" PRIx64 "-%" PRId64, o->seed, i);
        snprintf(uid, sizeof(uid), "u%" PRId64, u);
        const char *type = kp_types[(r >> 20) % 8];
        snprintf(url, sizeof(url), "https://shop.example/p/%" PRIu64, (r >> 28) % 500);
        snprintf(prod, sizeof(prod), "sku-%" PRIu64, (r >> 40) % 2000);
        if (cm_event_set_str(&ev, &ev.event_id, id, strlen(id)) ||
            cm_event_set_str(&ev, &ev.user_id, uid, strlen(uid)) ||
            cm_event_set_str(&ev, &ev.event_type, type, strlen(type)) ||
            cm_event_set_str(&ev, &ev.page_url, url, strlen(url)) ||
            cm_event_set_str(&ev, &ev.device_type, kp_devices[u % 3], strlen(kp_devices[u % 3])) ||
            cm_event_set_str(&ev, &ev.geo_country, kp_countries[u % 8], 2)) {
            rc = 1;
            break;
        }
        ev.type = (cm_event_type_t)cm_event_type_parse(type);
        ev.ts_ms = t;
        ev.received_at_ms = t + 50;
        if (ev.type == CM_EV_PURCHASE || ev.type == CM_EV_ADD_TO_CART || ev.type == CM_EV_PRODUCT_VIEW) {
            if (cm_event_set_str(&ev, &ev.product_id, prod, strlen(prod)) ||
                cm_event_set_str(&ev, &ev.category, "shoes", 5)) {
                rc = 1;
                break;
            }
            ev.quantity = 1 + (int32_t)((r >> 50) % 3);
            ev.has_price = true;
            ev.price_micros = (int64_t)((r >> 8) % 20000) * 10000;
        }
        cm_buf_reset(&out);
        if (cm_avro_encode_event(&ev, CM_SCHEMA_ID_EVENT, &out) != CM_OK) {
            fprintf(stderr, "cs-kperf: encode failed\n");
            rc = 1;
            break;
        }
        bytes += (int64_t)out.len;
        if (kp_send(rk, o->topic, uid, strlen(uid), out.data, out.len)) {
            rc = 1;
            break;
        }
        if ((i & 1023) == 0)
            rd_kafka_poll(rk, 0);
    }
    rd_kafka_flush(rk, 120000);
    if (!rc)
        kp_report("fill", o->count, bytes, cm_mono_us() - t0, kp_cpu_seconds() - c0);
    cm_buf_free(&out);
    cm_event_free(&ev);
    rd_kafka_destroy(rk);
    return rc;
}

/* Assigns every partition of topic from the beginning; returns the consumer
 * and fills *ends with the sum of (high - low) watermarks. */
static rd_kafka_t *kp_consumer(const char *bootstrap, const char *topic, int64_t *total)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *props[][2] = {
        {"bootstrap.servers", bootstrap}, {"group.id", "cs-kperf"}, {"enable.auto.commit", "false"},
        {"isolation.level", "read_committed"}, {"fetch.max.bytes", "52428800"},
        {"queued.min.messages", "1000000"}, {"log_level", "3"},
    };
    for (size_t i = 0; i < sizeof(props) / sizeof(props[0]); i++) {
        if (rd_kafka_conf_set(conf, props[i][0], props[i][1], errstr, sizeof(errstr))) {
            fprintf(stderr, "cs-kperf: %s\n", errstr);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "cs-kperf: %s\n", errstr);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    const struct rd_kafka_metadata *md;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (rd_kafka_metadata(rk, 0, rkt, &md, 10000) || md->topic_cnt != 1 || md->topics[0].err) {
        fprintf(stderr, "cs-kperf: no metadata for %s\n", topic);
        rd_kafka_topic_destroy(rkt);
        rd_kafka_destroy(rk);
        return NULL;
    }
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
    *total = 0;
    for (int p = 0; p < md->topics[0].partition_cnt; p++) {
        int64_t lo = 0, hi = 0;
        rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000);
        *total += hi - lo;
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    }
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    return rk;
}

static int kp_consume(const kp_opts_t *o)
{
    int64_t total;
    rd_kafka_t *rk = kp_consumer(o->bootstrap, o->topic, &total);
    if (!rk)
        return 1;
    int64_t want = o->count > 0 && o->count < total ? o->count : total;
    int64_t n = 0, bytes = 0, idle = 0;
    int64_t t0 = 0;
    double c0 = kp_cpu_seconds();
    while (n < want && idle < 100) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m) {
            idle++;
            continue;
        }
        idle = 0;
        if (!m->err) {
            if (!t0)
                t0 = cm_mono_us();
            n++;
            bytes += (int64_t)m->len;
        }
        rd_kafka_message_destroy(m);
    }
    kp_report("consume", n, bytes, t0 ? cm_mono_us() - t0 : 0, kp_cpu_seconds() - c0);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return n == want ? 0 : 1;
}

typedef struct kp_rec {
    void *key, *val;
    size_t klen, vlen;
} kp_rec_t;

static int kp_produce(const kp_opts_t *o)
{
    int64_t total;
    rd_kafka_t *c = kp_consumer(o->bootstrap, o->topic, &total);
    if (!c)
        return 1;
    int64_t want = o->count > 0 && o->count < total ? o->count : total;
    kp_rec_t *recs = calloc((size_t)want + 1, sizeof(*recs));
    int64_t n = 0, idle = 0, bytes = 0;
    while (recs && n < want && idle < 100) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (!m) {
            idle++;
            continue;
        }
        idle = 0;
        if (!m->err) {
            recs[n].klen = m->key_len;
            recs[n].vlen = m->len;
            recs[n].key = malloc(m->key_len + 1);
            recs[n].val = malloc(m->len + 1);
            memcpy(recs[n].key, m->key, m->key_len);
            memcpy(recs[n].val, m->payload, m->len);
            bytes += (int64_t)m->len;
            n++;
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    rd_kafka_t *p = kp_producer(o->bootstrap);
    int rc = p ? 0 : 1;
    int64_t t0 = cm_mono_us();
    double c0 = kp_cpu_seconds();
    for (int64_t i = 0; !rc && i < n; i++) {
        rc = kp_send(p, o->to, recs[i].key, recs[i].klen, recs[i].val, recs[i].vlen);
        if ((i & 1023) == 0)
            rd_kafka_poll(p, 0);
    }
    if (p) {
        rd_kafka_flush(p, 120000);
        if (!rc)
            kp_report("produce", n, bytes, cm_mono_us() - t0, kp_cpu_seconds() - c0);
        rd_kafka_destroy(p);
    }
    for (int64_t i = 0; recs && i < n; i++) {
        free(recs[i].key);
        free(recs[i].val);
    }
    free(recs);
    return rc;
}

static void kp_usage(FILE *f)
{
    fprintf(f, "usage: cs-kperf fill    -b BOOTSTRAP -t TOPIC -n COUNT [-u USERS] [-s SEED] [--start-ms MS]\n"
               "       cs-kperf consume -b BOOTSTRAP -t TOPIC [-n COUNT]\n"
               "       cs-kperf produce -b BOOTSTRAP -t FROM --to TOPIC [-n COUNT]\n"
               "Kafka throughput figures for the benchmarks (one JSON line on stdout).\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        kp_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    kp_opts_t o = {.bootstrap = getenv("KAFKA_BOOTSTRAP"), .seed = 42};
    static const struct option lopts[] = {{"to", required_argument, 0, 'T'},
                                          {"start-ms", required_argument, 0, 'S'},
                                          {0, 0, 0, 0}};
    const char *mode = argv[1];
    optind = 2;
    int c;
    while ((c = getopt_long(argc, argv, "b:t:n:u:s:", lopts, NULL)) != -1) {
        switch (c) {
        case 'b': o.bootstrap = optarg; break;
        case 't': o.topic = optarg; break;
        case 'n': o.count = strtoll(optarg, NULL, 10); break;
        case 'u': o.users = strtoll(optarg, NULL, 10); break;
        case 's': o.seed = strtoull(optarg, NULL, 10); break;
        case 'T': o.to = optarg; break;
        case 'S': o.start_ms = strtoll(optarg, NULL, 10); break;
        default: kp_usage(stderr); return 2;
        }
    }
    if (!o.bootstrap || !o.topic) {
        fprintf(stderr, "cs-kperf: -b BOOTSTRAP (or KAFKA_BOOTSTRAP) and -t TOPIC are required\n");
        return 2;
    }
    if (!strcmp(mode, "fill")) {
        if (o.count <= 0) {
            fprintf(stderr, "cs-kperf: fill needs -n COUNT > 0\n");
            return 2;
        }
        return kp_fill(&o);
    }
    if (!strcmp(mode, "consume"))
        return kp_consume(&o);
    if (!strcmp(mode, "produce")) {
        if (!o.to) {
            fprintf(stderr, "cs-kperf: produce needs --to TOPIC\n");
            return 2;
        }
        return kp_produce(&o);
    }
    fprintf(stderr, "cs-kperf: unknown command '%s' (try --help)\n", mode);
    return 2;
}
