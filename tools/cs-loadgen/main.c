/*
 * cs-loadgen: a realistic, reproducible load for the ingest gateway.
 * Wiring only: options, the generator (lg_gen.c), the engine (lg_http.c),
 * and the summary.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cm_event.h"
#include "cm_time.h"
#include "lg_gen.h"
#include "lg_http.h"

static void lg_usage(FILE *f)
{
    fprintf(f,
"usage: cs-loadgen [options]\n"
"Simulates the users of a shop and POSTs their events to the ingest gateway.\n"
"The stream is fixed by --seed/--users/--start and the shape options; rate,\n"
"concurrency and timing never change it.\n"
"\n"
"target\n"
"  --url URL            events endpoint (default http://127.0.0.1:8080/v1/events)\n"
"  --key KEY            write key (Authorization: Bearer); env CS_WRITE_KEY\n"
"load\n"
"  --count N            events to send (default 10000 unless --duration)\n"
"  --duration SECONDS   send for this long (with --count: whichever ends first)\n"
"  --rate EV_PER_S      pace in events/s (default 0: as fast as possible)\n"
"  --batch N            events per request (default 100; 1: one JSON object)\n"
"  --format array|ndjson  body of a batch (default array)\n"
"  --gzip               gzip the bodies (Content-Encoding: gzip)\n"
"  --concurrency N      connections (default 8)\n"
"  --retries N          resend a request after 429/503/connection error (default 5)\n"
"  --timeout SECONDS    per request (default 30)\n"
"stream\n"
"  --seed N             (default 1)\n"
"  --users N            simulated users (default 1000)\n"
"  --start TIME         simulated clock start, RFC 3339 or epoch ms (default: far\n"
"                       enough in the past that the run ends near now)\n"
"  --think-ms MS        mean think time inside a session (default 20000)\n"
"  --gap-ms MS          mean extra gap between sessions, on top of 31 min (default 7200000)\n"
"  --session-events N   mean events per session (default 8)\n"
"  --dup F --ooo F --late F --invalid F\n"
"                       fractions of duplicates, out-of-order (1..8 s back),\n"
"                       late (20 min back) and invalid events (default 0)\n"
"output\n"
"  --out FILE           the exact stream sent, one event per line, each with an\n"
"                       extra first member \"_lg\":{\"kind\":ok|dup|ooo|late|invalid,\n"
"                       \"seq\":N,\"req\":N} (not sent on the wire)\n"
"  --summary FILE       the summary as JSON\n"
"  --progress SECONDS   progress line interval (default 1; 0: none)\n"
"  --print-span         print the simulated span of --count events and exit\n"
"exit: 0 done, 1 some events were never answered 2xx/400, 2 usage\n");
}

static int lg_parse_time(const char *s, int64_t *out)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*s && !*end) {
        *out = v;
        return 0;
    }
    return cm_ts_parse_rfc3339(s, strlen(s), out) == CM_OK ? 0 : -1;
}

static void lg_write_summary(FILE *f, lg_stats_t *st, const lg_gen_opts_t *g,
                             const lg_run_opts_t *o)
{
    double p50 = lg_stats_pct_ms(st, 50), p90 = lg_stats_pct_ms(st, 90),
           p99 = lg_stats_pct_ms(st, 99), pmax = lg_stats_pct_ms(st, 100);
    double el = st->elapsed_s > 0 ? st->elapsed_s : 1e-9;
    fprintf(f, "{\"events\":%llu,\"by_kind\":{", (unsigned long long)st->events);
    for (int k = 0; k < LG__KINDS; k++)
        fprintf(f, "%s\"%s\":%llu", k ? "," : "", lg_kind_name((lg_kind_t)k),
                (unsigned long long)st->by_kind[k]);
    fprintf(f,
            "},\"expected_accepted\":%llu,\"expected_rejected\":%llu,"
            "\"accepted\":%llu,\"rejected\":%llu,\"failed_events\":%llu,"
            "\"requests\":%llu,\"attempts\":%llu,\"retries\":%llu,\"failed_requests\":%llu,"
            "\"conn_errors\":%llu,\"bytes_sent\":%llu,\"status\":{",
            (unsigned long long)(st->events - st->by_kind[LG_INVALID]),
            (unsigned long long)st->by_kind[LG_INVALID], (unsigned long long)st->accepted,
            (unsigned long long)st->rejected, (unsigned long long)st->failed_events,
            (unsigned long long)st->requests, (unsigned long long)st->attempts,
            (unsigned long long)st->retries, (unsigned long long)st->failed_requests,
            (unsigned long long)st->conn_errors, (unsigned long long)st->bytes_sent);
    int first = 1;
    for (int c = 0; c < LG_STATUS_SLOTS; c++)
        if (st->status[c]) {
            fprintf(f, "%s\"%d\":%llu", first ? "" : ",", c, (unsigned long long)st->status[c]);
            first = 0;
        }
    fprintf(f,
            "},\"elapsed_s\":%.3f,\"events_per_s\":%.1f,\"requests_per_s\":%.1f,"
            "\"latency_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f},"
            "\"seed\":%llu,\"users\":%u,\"start_ms\":%lld,\"batch\":%u,\"concurrency\":%u}\n",
            st->elapsed_s, (double)st->events / el, (double)st->attempts / el, p50, p90, p99,
            pmax, (unsigned long long)g->seed, g->users, (long long)g->start_ms, o->batch,
            o->concurrency);
}

int main(int argc, char **argv)
{
    lg_gen_opts_t g;
    lg_gen_opts_default(&g);
    lg_run_opts_t o = {
        .url = "http://127.0.0.1:8080/v1/events",
        .key = getenv("CS_WRITE_KEY"),
        .batch = 100,
        .concurrency = 8,
        .retries = 5,
        .timeout_ms = 30000,
        .progress_s = 1,
    };
    const char *out_path = NULL, *summary_path = NULL;
    bool start_set = false, print_span = false;
    double duration_s = 0;
    enum { O_URL = 256, O_KEY, O_COUNT, O_DURATION, O_RATE, O_BATCH, O_FORMAT, O_GZIP, O_CONC,
           O_RETRIES, O_TIMEOUT, O_SEED, O_USERS, O_START, O_THINK, O_GAP, O_SESS, O_DUP,
           O_OOO, O_LATE, O_INVALID, O_OUT, O_SUMMARY, O_PROGRESS, O_SPAN, O_HELP };
    static const struct option opts[] = {
        {"url", 1, 0, O_URL},         {"key", 1, 0, O_KEY},
        {"count", 1, 0, O_COUNT},     {"duration", 1, 0, O_DURATION},
        {"rate", 1, 0, O_RATE},       {"batch", 1, 0, O_BATCH},
        {"format", 1, 0, O_FORMAT},   {"gzip", 0, 0, O_GZIP},
        {"concurrency", 1, 0, O_CONC},{"retries", 1, 0, O_RETRIES},
        {"timeout", 1, 0, O_TIMEOUT}, {"seed", 1, 0, O_SEED},
        {"users", 1, 0, O_USERS},     {"start", 1, 0, O_START},
        {"think-ms", 1, 0, O_THINK},  {"gap-ms", 1, 0, O_GAP},
        {"session-events", 1, 0, O_SESS}, {"dup", 1, 0, O_DUP},
        {"ooo", 1, 0, O_OOO},         {"late", 1, 0, O_LATE},
        {"invalid", 1, 0, O_INVALID}, {"out", 1, 0, O_OUT},
        {"summary", 1, 0, O_SUMMARY}, {"progress", 1, 0, O_PROGRESS},
        {"print-span", 0, 0, O_SPAN}, {"help", 0, 0, O_HELP},
        {0, 0, 0, 0},
    };
    int c;
    opterr = 0; /* one line of our own below instead of getopt's and the usage */
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end = NULL;
        switch (c) {
        case O_URL: o.url = optarg; break;
        case O_KEY: o.key = optarg; break;
        case O_COUNT: o.count = strtoull(optarg, &end, 10); break;
        case O_DURATION: duration_s = strtod(optarg, &end); break;
        case O_RATE: o.rate = strtod(optarg, &end); break;
        case O_BATCH: o.batch = (uint32_t)strtoul(optarg, &end, 10); break;
        case O_FORMAT:
            if (strcmp(optarg, "array") == 0)
                o.format = LG_FMT_ARRAY;
            else if (strcmp(optarg, "ndjson") == 0)
                o.format = LG_FMT_NDJSON;
            else {
                fprintf(stderr, "cs-loadgen: --format must be array or ndjson\n");
                return 2;
            }
            break;
        case O_GZIP: o.gzip = true; break;
        case O_CONC: o.concurrency = (uint32_t)strtoul(optarg, &end, 10); break;
        case O_RETRIES: o.retries = (int)strtol(optarg, &end, 10); break;
        case O_TIMEOUT: o.timeout_ms = (int64_t)(strtod(optarg, &end) * 1000); break;
        case O_SEED: g.seed = strtoull(optarg, &end, 10); break;
        case O_USERS: g.users = (uint32_t)strtoul(optarg, &end, 10); break;
        case O_START:
            if (lg_parse_time(optarg, &g.start_ms)) {
                fprintf(stderr, "cs-loadgen: --start must be RFC 3339 or epoch ms, not '%s'\n",
                        optarg);
                return 2;
            }
            start_set = true;
            break;
        case O_THINK: g.think_ms = strtoll(optarg, &end, 10); break;
        case O_GAP: g.gap_ms = strtoll(optarg, &end, 10); break;
        case O_SESS: g.session_events = strtod(optarg, &end); break;
        case O_DUP: g.f_dup = strtod(optarg, &end); break;
        case O_OOO: g.f_ooo = strtod(optarg, &end); break;
        case O_LATE: g.f_late = strtod(optarg, &end); break;
        case O_INVALID: g.f_invalid = strtod(optarg, &end); break;
        case O_OUT: out_path = optarg; break;
        case O_SUMMARY: summary_path = optarg; break;
        case O_PROGRESS: o.progress_s = strtod(optarg, &end); break;
        case O_SPAN: print_span = true; break;
        case 'h':
        case O_HELP: lg_usage(stdout); return 0;
        default: goto usage;
        }
        if (end && *end) {
            fprintf(stderr, "cs-loadgen: bad number '%s'\n", optarg);
            return 2;
        }
    }
    if (optind < argc || o.batch < 1 || o.batch > 100000 || o.concurrency < 1 ||
        o.concurrency > 10000 || g.users < 1 || o.rate < 0 || duration_s < 0 ||
        g.f_dup + g.f_ooo + g.f_late + g.f_invalid > 1 || g.f_dup < 0 || g.f_ooo < 0 ||
        g.f_late < 0 || g.f_invalid < 0) {
        fprintf(stderr, "cs-loadgen: an option is out of range (batch 1..100000, concurrency "
                        "1..10000, users >= 1, fractions >= 0 summing to <= 1; try --help)\n");
        return 2;
    }
    o.duration_ms = (int64_t)(duration_s * 1000);
    if (!o.count && !o.duration_ms)
        o.count = 10000;

    /* Event times must not run ahead of the gateway's clock: by default the
     * simulated clock starts so far back that the run ends about now. */
    uint64_t horizon = o.count;
    if (!horizon || (o.duration_ms && o.rate > 0 && o.rate * duration_s < (double)horizon))
        horizon = o.rate > 0 ? (uint64_t)(o.rate * duration_s) + 1
                             : (uint64_t)(300000 * duration_s) + 1;
    if (print_span) {
        printf("%lld\n", (long long)lg_gen_span(&g, horizon));
        return 0;
    }
    int64_t now = cm_now_ms();
    if (!start_set)
        g.start_ms = now - lg_gen_span(&g, horizon) - 60000;
    o.max_clock_ms = now + 4 * 60 * 1000 + o.duration_ms;
    o.progress_tty = isatty(2);

    if (out_path) {
        o.out = fopen(out_path, "w");
        if (!o.out) {
            perror(out_path);
            return 1;
        }
        setvbuf(o.out, NULL, _IOFBF, 1 << 20);
    }
    lg_gen_t *gen = lg_gen_new(&g);
    if (!gen) {
        fprintf(stderr, "cs-loadgen: out of memory\n");
        return 1;
    }
    lg_stats_t st;
    memset(&st, 0, sizeof(st));
    if (lg_run(&o, gen, &st))
        return 1;
    if (o.out)
        fclose(o.out);

    double el = st.elapsed_s > 0 ? st.elapsed_s : 1e-9;
    printf("cs-loadgen: %llu events in %llu requests (%llu attempts) in %.2f s: "
           "%.0f events/s, %.0f requests/s\n",
           (unsigned long long)st.events, (unsigned long long)st.requests,
           (unsigned long long)st.attempts, st.elapsed_s, (double)st.events / el,
           (double)st.attempts / el);
    printf("  kinds: ok %llu dup %llu ooo %llu late %llu invalid %llu\n",
           (unsigned long long)st.by_kind[LG_OK], (unsigned long long)st.by_kind[LG_DUP],
           (unsigned long long)st.by_kind[LG_OOO], (unsigned long long)st.by_kind[LG_LATE],
           (unsigned long long)st.by_kind[LG_INVALID]);
    printf("  accepted %llu, rejected %llu, failed %llu (retries %llu, connection errors "
           "%llu)\n",
           (unsigned long long)st.accepted, (unsigned long long)st.rejected,
           (unsigned long long)st.failed_events, (unsigned long long)st.retries,
           (unsigned long long)st.conn_errors);
    printf("  latency: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n",
           lg_stats_pct_ms(&st, 50), lg_stats_pct_ms(&st, 90), lg_stats_pct_ms(&st, 99),
           lg_stats_pct_ms(&st, 100));
    if (summary_path) {
        FILE *f = fopen(summary_path, "w");
        if (!f) {
            perror(summary_path);
        } else {
            lg_write_summary(f, &st, &g, &o);
            fclose(f);
        }
    }
    int rc = st.failed_events ? 1 : 0;
    lg_stats_free(&st);
    lg_gen_destroy(gen);
    return rc;
usage:
    fprintf(stderr, "cs-loadgen: bad or unknown option '%s' (try --help)\n",
            optind > 0 && optind <= argc ? argv[optind - 1] : "?");
    return 2;
}
