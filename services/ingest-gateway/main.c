/*
 * ingest-gateway: the HTTP front door of the clickstream pipeline.
 * Wiring only: configuration, logging, signals, the gateway's life cycle.
 */
#include <stdio.h>

#include "cm_config.h"
#include "cm_log.h"
#include "cm_signal.h"
#include "gateway.h"

int main(int argc, char **argv)
{
    gw_config_t cfg = {0};
    cm_passthrough_t pt = {0};
    char errstr[512];
    int rc = cm_config_main_init(argc, argv, GW_SERVICE, GW_SUMMARY, gw_config_table, &cfg, &pt);
    if (rc)
        return rc == 1 ? 0 : 2;
    cm_log_init(GW_SERVICE, (cm_log_level_t)cm_log_level_parse(cfg.log_level));

    gw_fail_t fail = GW_FAIL_NONE;
    gw_gateway_t *gw = NULL;
    rc = 1;
    if (cm_signal_install(errstr, sizeof(errstr))) {
        fprintf(stderr, "%s: %s\n", GW_SERVICE, errstr);
        goto out;
    }
    gw = gw_gateway_new(&cfg, &pt, &fail, errstr, sizeof(errstr));
    if (!gw) {
        fprintf(stderr, "%s: %s\n", GW_SERVICE, errstr);
        rc = fail == GW_FAIL_CONFIG ? 2 : 1;
        goto out;
    }
    if (gw_http_start(gw, errstr, sizeof(errstr))) {
        fprintf(stderr, "%s: %s\n", GW_SERVICE, errstr);
        goto out;
    }
    char desc[2048];
    cm_config_describe(gw_config_table, &cfg, desc, sizeof(desc));
    cm_log_info("listening", "port", "%d", gw->port, "auth", "%s",
                cfg.auth ? "on" : "OFF (every request accepted without a write key)",
                "write_keys", "%ld", (long)(cfg.auth ? (long)gw_auth_count(gw->auth) : 0),
                "anonymize", "%b", (int)cfg.anonymize, "topic", "%s", cfg.topic,
                "schema_id", "%ld", (long)gw->bopts.schema_id, "config", "%s", desc, NULL);
    while (!cm_signal_wait(-1))
        ;
    cm_log_info("stopping", "signal", "%d", cm_signal_received(), NULL);
    gw_gateway_shutdown(gw, (int)cfg.shutdown_timeout_ms);
    cm_log_info("stopped", NULL);
    rc = 0;
out:
    gw_gateway_destroy(gw);
    cm_passthrough_free(&pt);
    cm_config_free(gw_config_table, &cfg);
    return rc;
}
