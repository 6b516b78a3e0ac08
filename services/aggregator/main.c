/*
 * aggregator: tumbling event-time windows of the clickstream into Redis (live)
 * and clickstream.metrics (final and revised results), exactly once.
 * Wiring only: configuration, logging, signals, the app's life cycle.
 */
#include <stdio.h>

#include "aggregator_config.h"
#include "aggregator_loop.h"
#include "cm_config.h"
#include "cm_log.h"
#include "cm_signal.h"

int main(int argc, char **argv)
{
    ag_config_t cfg = {0};
    cm_passthrough_t pt = {0};
    char errstr[512];
    int rc = cm_config_main_init(argc, argv, AG_SERVICE, AG_SUMMARY, ag_config_table, &cfg, &pt);
    if (rc)
        return rc == 1 ? 0 : 2;
    cm_log_init(AG_SERVICE, (cm_log_level_t)cm_log_level_parse(cfg.common.log_level));

    ag_app_t *app = NULL;
    bool config_error = false;
    rc = 1;
    if (cm_signal_install(errstr, sizeof(errstr))) {
        fprintf(stderr, "%s: %s\n", AG_SERVICE, errstr);
        goto out;
    }
    app = ag_app_new(&cfg, &pt, &config_error, errstr, sizeof(errstr));
    if (!app) {
        fprintf(stderr, "%s: %s\n", AG_SERVICE, errstr);
        rc = config_error ? 2 : 1;
        goto out;
    }
    char desc[4096];
    cm_config_describe(ag_config_table, &cfg, desc, sizeof(desc));
    cm_log_info("starting", "config", "%s", desc, NULL);
    cm_err_t err = ag_app_run(app);
    cm_log_info("stopped", "signal", "%d", cm_signal_received(), "result", "%s",
                cm_err_str(err), NULL);
    rc = err ? 1 : 0;
out:
    ag_app_destroy(app);
    cm_passthrough_free(&pt);
    cm_config_free(ag_config_table, &cfg);
    return rc;
}
