/*
 * sessionizer: exactly-once event-time sessions from the raw topic (SPEC 2-4).
 * Wiring only: configuration, logging, signals, metrics and admin endpoint,
 * the app's life cycle (sessionizer_loop.c).
 */
#include <stdio.h>

#include "cm_admin.h"
#include "cm_config.h"
#include "cm_log.h"
#include "cm_metrics.h"
#include "cm_signal.h"
#include "sessionizer_config.h"
#include "sessionizer_loop.h"

int main(int argc, char **argv)
{
    sz_config_t cfg = {0};
    cm_passthrough_t pt = {0};
    char errstr[512];
    int rc = cm_config_main_init(argc, argv, SZ_SERVICE, SZ_SUMMARY, sz_config_table, &cfg, &pt);
    if (rc)
        return rc == 1 ? 0 : 2;
    cm_log_init(SZ_SERVICE, (cm_log_level_t)cm_log_level_parse(cfg.common.log_level));

    cm_metrics_t *reg = NULL;
    cm_admin_t *adm = NULL;
    sz_app_t *app = NULL;
    rc = 1;
    if (cm_signal_install(errstr, sizeof(errstr))) {
        fprintf(stderr, "%s: %s\n", SZ_SERVICE, errstr);
        goto out;
    }
    if (!(reg = cm_metrics_new())) {
        fprintf(stderr, "%s: out of memory\n", SZ_SERVICE);
        goto out;
    }
    cm_metrics_register_process(reg);
    adm = cm_admin_start(cfg.common.admin_addr, (int)cfg.common.admin_port, reg, errstr,
                         sizeof(errstr));
    if (!adm) {
        fprintf(stderr, "%s: admin server: %s\n", SZ_SERVICE, errstr);
        goto out;
    }
    char desc[2048];
    cm_config_describe(sz_config_table, &cfg, desc, sizeof(desc));
    cm_log_info("starting", "admin_port", "%d", cm_admin_port(adm), "config", "%s", desc, NULL);
    app = sz_app_new(&cfg, &pt, reg, errstr, sizeof(errstr));
    if (!app) {
        cm_log_error("cannot start", "error", "%s", errstr, NULL);
        goto out;
    }
    cm_admin_set_ready_fn(adm, sz_app_ready, app);
    cm_err_t err = sz_app_run(app);
    cm_admin_set_ready_fn(adm, NULL, NULL);
    cm_admin_set_ready(adm, false, "stopping");
    if (err) {
        cm_log_error("stopped on an error", "error", "%s", cm_err_str(err), NULL);
        goto out;
    }
    cm_log_info("stopped", "signal", "%d", cm_signal_received(), NULL);
    rc = 0;
out:
    cm_admin_stop(adm);
    sz_app_destroy(app);
    cm_metrics_destroy(reg);
    cm_passthrough_free(&pt);
    cm_config_free(sz_config_table, &cfg);
    return rc;
}
