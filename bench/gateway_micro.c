/*
 * bench/gateway_micro.c: where the gateway's CPU goes per event, without
 * HTTP or Kafka: split, jansson parse, SPEC §1 validation, and the whole of
 * gw_batch_process (parse + validate + enrich + Avro encode), over request
 * bodies of 100 cs-loadgen events. Built and run by bench/gateway.sh.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cm_event.h"
#include "cm_time.h"
#include "gateway_batch.h"
#include "gateway_json.h"
#include "lg_gen.h"

#define BODIES 50
#define BATCH 100

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 40;
    lg_gen_opts_t go;
    lg_gen_opts_default(&go);
    go.start_ms = cm_now_ms() - 86400000;
    lg_gen_t *g = lg_gen_new(&go);
    cm_buf_t bodies[BODIES];
    for (int i = 0; i < BODIES; i++) {
        cm_buf_init(&bodies[i], 0);
        cm_buf_putc(&bodies[i], '[');
        for (int j = 0; j < BATCH; j++) {
            int64_t ts;
            if (j)
                cm_buf_putc(&bodies[i], ',');
            lg_gen_next(g, &bodies[i], &ts);
        }
        cm_buf_putc(&bodies[i], ']');
    }
    gw_json_arena_install(); /* as the gateway does */
    gw_batch_opts_t bo = {.lim = CM_EVENT_LIMITS_DEFAULT, .max_errors = 100, .schema_id = 1,
                          .anonymize = true};
    gw_batch_t b;
    gw_batch_init(&b, &bo, NULL, NULL);
    gw_slice_t sl[1000];
    cm_event_t ev;
    cm_event_init(&ev);
    char err[256];
    double n_ev = (double)rounds * BODIES * BATCH;
    size_t bytes = 0;
    for (int i = 0; i < BODIES; i++)
        bytes += bodies[i].len;
    gw_enrich_ctx_t ec = {.now_ms = cm_now_ms(), .client_ip = "10.1.2.0", .anonymize = true};

    int64_t t0 = cm_mono_us();
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < BODIES; i++) {
            size_t n;
            gw_batch_split((const char *)bodies[i].data, bodies[i].len, GW_BODY_JSON, sl, 1000,
                           &n, err, sizeof(err));
        }
    double split = (double)(cm_mono_us() - t0) / n_ev;

    t0 = cm_mono_us();
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < BODIES; i++) {
            size_t n;
            gw_batch_split((const char *)bodies[i].data, bodies[i].len, GW_BODY_JSON, sl, 1000,
                           &n, err, sizeof(err));
            for (size_t k = 0; k < n; k++)
                json_decref(gw_batch_parse_slice((const char *)bodies[i].data, &sl[k], err,
                                                 sizeof(err)));
        }
    double parse = (double)(cm_mono_us() - t0) / n_ev;

    t0 = cm_mono_us();
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < BODIES; i++) {
            size_t n;
            gw_batch_split((const char *)bodies[i].data, bodies[i].len, GW_BODY_JSON, sl, 1000,
                           &n, err, sizeof(err));
            for (size_t k = 0; k < n; k++) {
                json_t *j = gw_batch_parse_slice((const char *)bodies[i].data, &sl[k], err,
                                                 sizeof(err));
                cm_event_error_t ve;
                cm_event_from_json(j, &bo.lim, ec.now_ms, &ev, &ve);
                json_decref(j);
            }
        }
    double validate = (double)(cm_mono_us() - t0) / n_ev;

    t0 = cm_mono_us();
    size_t ok = 0;
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < BODIES; i++) {
            gw_batch_process(&b, (const char *)bodies[i].data, bodies[i].len, false,
                             GW_BODY_JSON, &ec);
            ok += b.n_msgs;
        }
    double full = (double)(cm_mono_us() - t0) / n_ev;
    printf("{\"event_bytes\":%.0f,\"split_us\":%.3f,\"parse_us\":%.3f,\"validate_us\":%.3f,"
           "\"process_us\":%.3f,\"valid\":%zu,\"events\":%.0f}\n",
           (double)bytes / (BODIES * BATCH), split, parse - split, validate - parse,
           full, ok, n_ev);
    gw_batch_free(&b);
    cm_event_free(&ev);
    lg_gen_destroy(g);
    for (int i = 0; i < BODIES; i++)
        cm_buf_free(&bodies[i]);
    return 0;
}
