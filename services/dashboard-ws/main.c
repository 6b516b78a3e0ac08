/*
 * dashboard-ws: the live dashboard of the clickstream pipeline.
 * Wiring only: configuration, logging, signals, metrics, the server and the
 * Redis reader.
 */
#include <stdio.h>

#include "cm_config.h"
#include "cm_log.h"
#include "cm_metrics.h"
#include "cm_signal.h"
#include "dashboard_config.h"
#include "dashboard_redis.h"
#include "dashboard_server.h"

static void publish(void *ud, db_model_t *m) { db_server_publish(ud, m); }

int main(int argc, char **argv)
{
    db_config_t cfg = {0};
    char errstr[512];
    int rc = cm_config_main_init(argc, argv, DB_SERVICE, DB_SUMMARY, db_config_table, &cfg, NULL);
    if (rc)
        return rc == 1 ? 0 : 2;
    cm_log_init(DB_SERVICE, (cm_log_level_t)cm_log_level_parse(cfg.log_level));

    cm_metrics_t *reg = NULL;
    db_server_t *srv = NULL;
    db_reader_t *rd = NULL;
    rc = 1;
    if (cm_signal_install(errstr, sizeof(errstr))) {
        fprintf(stderr, "%s: %s\n", DB_SERVICE, errstr);
        goto out;
    }
    reg = cm_metrics_new();
    if (!reg) {
        fprintf(stderr, "%s: out of memory\n", DB_SERVICE);
        goto out;
    }
    cm_metrics_register_process(reg);
    srv = db_server_start(&cfg, reg, errstr, sizeof(errstr));
    if (!srv) {
        fprintf(stderr, "%s: %s\n", DB_SERVICE, errstr);
        rc = 2;
        goto out;
    }
    rd = db_reader_start(&cfg, reg, publish, srv, errstr, sizeof(errstr));
    if (!rd) {
        fprintf(stderr, "%s: %s\n", DB_SERVICE, errstr);
        goto out;
    }
    db_server_set_ready_fn(srv, db_reader_ready, rd);

    char desc[2048];
    cm_config_describe(db_config_table, &cfg, desc, sizeof(desc));
    cm_log_info("listening", "port", "%d", db_server_port(srv), "token", "%s",
                cfg.read_token && *cfg.read_token ? "required" : "none", "config", "%s", desc,
                NULL);
    while (!cm_signal_wait(-1))
        ;
    cm_log_info("stopping", "signal", "%d", cm_signal_received(), NULL);
    rc = 0;
out:
    /* the reader publishes into the server: stop it first */
    db_reader_stop(rd);
    db_server_stop(srv);
    cm_metrics_destroy(reg);
    cm_config_free(db_config_table, &cfg);
    if (rc == 0)
        cm_log_info("stopped", NULL);
    return rc;
}
