/*
 * lake-writer: Kafka topics -> Apache Iceberg tables, exactly once.
 * Wiring only: configuration, logging, signals, admin endpoint, the loop;
 * and the explicit `expire-snapshots` command.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_admin.h"
#include "cm_config.h"
#include "cm_log.h"
#include "cm_metrics.h"
#include "cm_signal.h"
#include "cm_time.h"
#include "lake_config.h"
#include "lake_loop.h"
#include "lake_metadata.h"
#include "lake_storage.h"

/* Fatal consumer errors survived by starting over: at most this many within
 * this long. */
#define LW_RESTARTS_MAX 5
#define LW_RESTART_WINDOW_MS (10 * 60 * 1000)

/* lake-writer expire-snapshots TABLE [--older-than DURATION] [--retain-last N] */
static int expire_main(int argc, char **argv)
{
    const char *table = NULL;
    int64_t older_ms = 5LL * 24 * 3600 * 1000; /* Iceberg's default: 5 days */
    int64_t retain = 1;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--older-than") == 0 && i + 1 < argc) {
            if (cm_parse_ms(argv[++i], &older_ms) || older_ms < 0) {
                fprintf(stderr, "%s: --older-than %s: a duration such as 90m, 7d\n", LW_SERVICE,
                        argv[i]);
                return 2;
            }
        } else if (strcmp(argv[i], "--retain-last") == 0 && i + 1 < argc) {
            char *end;
            retain = strtoll(argv[++i], &end, 10);
            if (*end || retain < 1) {
                fprintf(stderr, "%s: --retain-last %s: an integer >= 1\n", LW_SERVICE, argv[i]);
                return 2;
            }
        } else if (!table && argv[i][0] != '-') {
            table = argv[i];
        } else {
            fprintf(stderr,
                    "usage: %s expire-snapshots TABLE [--older-than DURATION] "
                    "[--retain-last N]\n",
                    LW_SERVICE);
            return 2;
        }
    }
    if (!table || !lw_table_def_find(table)) {
        fprintf(stderr, "%s: expire-snapshots needs a table name (events_raw, sessions, ...)\n",
                LW_SERVICE);
        return 2;
    }
    lw_config_t cfg = {0};
    char errstr[512];
    if (cm_config_load(lw_config_table, &cfg, NULL, NULL, errstr, sizeof(errstr))) {
        fprintf(stderr, "%s: %s\n", LW_SERVICE, errstr);
        return 2;
    }
    cm_log_init(LW_SERVICE, (cm_log_level_t)cm_log_level_parse(cfg.common.log_level));
    lw_storage_opts_t so = {.warehouse = cfg.warehouse,
                            .staging = cfg.staging,
                            .fsync = cfg.fsync,
                            .endpoint = cfg.s3_endpoint,
                            .region = cfg.s3_region,
                            .access_key = cfg.s3_access_key,
                            .secret_key = cfg.s3_secret_key,
                            .path_style = cfg.s3_path_style,
                            .timeout_ms = (long)cfg.s3_timeout_ms};
    int rc = 1;
    lw_storage_t *st = lw_storage_new(&so, errstr, sizeof(errstr));
    if (!st) {
        fprintf(stderr, "%s: %s\n", LW_SERVICE, errstr);
        goto out;
    }
    int expired = 0;
    if (lw_meta_expire_snapshots(st, table, cm_now_ms() - older_ms, (int)retain,
                                 &expired, errstr, sizeof(errstr))) {
        fprintf(stderr, "%s: expire-snapshots %s: %s\n", LW_SERVICE, table, errstr);
        goto out;
    }
    printf("%s: %d snapshot(s) expired\n", table, expired);
    rc = 0;
out:
    lw_storage_destroy(st);
    cm_config_free(lw_config_table, &cfg);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "expire-snapshots") == 0)
        return expire_main(argc, argv);

    lw_config_t cfg = {0};
    cm_passthrough_t pt = {0};
    char errstr[512];
    int rc = cm_config_main_init(argc, argv, LW_SERVICE, LW_SUMMARY, lw_config_table, &cfg, &pt);
    if (rc)
        return rc == 1 ? 0 : 2;
    if (lw_config_check(&cfg, errstr, sizeof(errstr))) {
        fprintf(stderr, "%s: %s\n", LW_SERVICE, errstr);
        cm_passthrough_free(&pt);
        cm_config_free(lw_config_table, &cfg);
        return 2;
    }
    cm_log_init(LW_SERVICE, (cm_log_level_t)cm_log_level_parse(cfg.common.log_level));

    cm_metrics_t *reg = NULL;
    cm_admin_t *adm = NULL;
    lw_loop_t *loop = NULL;
    rc = 1;
    if (cm_signal_install(errstr, sizeof(errstr))) {
        fprintf(stderr, "%s: %s\n", LW_SERVICE, errstr);
        goto out;
    }
    reg = cm_metrics_new();
    if (!reg) {
        fprintf(stderr, "%s: out of memory\n", LW_SERVICE);
        goto out;
    }
    cm_metrics_register_process(reg);
    adm = cm_admin_start(cfg.common.admin_addr, (int)cfg.common.admin_port, reg, errstr,
                         sizeof(errstr));
    if (!adm) {
        fprintf(stderr, "%s: admin server: %s\n", LW_SERVICE, errstr);
        goto out;
    }
    cm_admin_set_ready(adm, false, "opening tables");
    loop = lw_loop_new(&cfg, &pt, reg, errstr, sizeof(errstr));
    if (!loop) {
        fprintf(stderr, "%s: %s\n", LW_SERVICE, errstr);
        goto out;
    }
    cm_admin_set_ready_fn(adm, lw_loop_ready, loop);
    char desc[2048];
    cm_config_describe(lw_config_table, &cfg, desc, sizeof(desc));
    cm_log_info("started", "admin_port", "%d", cm_admin_port(adm), "config", "%s", desc, NULL);
    cm_counter_t *restarts = cm_metrics_counter(
        reg, "lake_consumer_restarts_total",
        "consumers started over after a fatal Kafka error (e.g. fenced after a broker restart)",
        NULL);
    int64_t window_start = cm_mono_ms();
    int in_window = 0;
    cm_err_t err;
    for (;;) {
        err = lw_loop_run(loop);
        if (err != CM_ERR_FATAL || cm_signal_stop_requested())
            break;
        /* A fatal error of the consumer, e.g. FENCED_INSTANCE_ID: the broker
         * gave this static member's id to a newer member id, which happens
         * when the group coordinator moves or restarts while a commit is in
         * flight. Nothing is lost (the input offsets live in the tables'
         * snapshots): start over as a restarted process would. Fenced again
         * and again means another writer runs with the same
         * LAKE_INSTANCE_ID: stop, and say so. */
        int64_t now = cm_mono_ms();
        if (now - window_start > LW_RESTART_WINDOW_MS) {
            window_start = now;
            in_window = 0;
        }
        if (++in_window > LW_RESTARTS_MAX) {
            cm_log_error("the Kafka consumer failed fatally too often; is another lake-writer "
                         "running with the same instance id?",
                         "instance_id", "%s", cfg.instance, "restarts", "%d", in_window - 1,
                         NULL);
            break;
        }
        cm_log_warn("the Kafka consumer failed fatally: starting over from the table snapshots",
                    "restart", "%d", in_window, NULL);
        cm_counter_inc(restarts);
        cm_admin_set_ready_fn(adm, NULL, NULL);
        cm_admin_set_ready(adm, false, "restarting the consumer");
        lw_loop_destroy(loop);
        loop = NULL;
        if (cm_signal_wait(1000))
            break;
        loop = lw_loop_new(&cfg, &pt, reg, errstr, sizeof(errstr));
        if (!loop) {
            cm_log_error("restart failed", "error", "%s", errstr, NULL);
            err = CM_ERR_FATAL;
            break;
        }
        cm_admin_set_ready_fn(adm, lw_loop_ready, loop);
    }
    cm_log_info("stopping", "signal", "%d", cm_signal_received(), NULL);
    rc = err == CM_OK ? 0 : 1;
out:
    if (adm)
        cm_admin_set_ready_fn(adm, NULL, NULL);
    cm_admin_stop(adm);
    lw_loop_destroy(loop);
    cm_metrics_destroy(reg);
    cm_passthrough_free(&pt);
    cm_config_free(lw_config_table, &cfg);
    if (rc == 0)
        cm_log_info("stopped", NULL);
    return rc;
}
