/*
 * The OpenBLAS backend and the host's OpenBLAS thread count (see "OpenBLAS" in deconv.h's
 * preamble): run with OPENBLAS_NUM_THREADS=2 against a library built with the openblas
 * feature. A host code that calls BLAS itself must keep its thread count across deconv's
 * calls; before this was fixed, the first OpenBLAS forward set it to 1 for good. Trains an
 * OpenBLAS layer (batch 1: GEMMs split over the threads; batch 4: images in parallel) and
 * checks openblas_get_num_threads() after every call. Built and run by .ci/run; exits
 * non-zero on any mismatch.
 */
#include <stdio.h>
#include <stdlib.h>

#include "deconv.h"

/* OpenBLAS's own API (cblas.h declares them too; declared here to need no OpenBLAS headers). */
int openblas_get_num_threads(void);
void openblas_set_num_threads(int num_threads);

static int failures = 0;

static void check(int ok, const char *what) {
    printf("  [%s] %s\n", ok ? " ok " : "FAIL", what);
    if (!ok) failures++;
}

#define TRY(call)                                                                       \
    do {                                                                                \
        deconv_status st_ = (call);                                                     \
        if (st_ != DECONV_OK) {                                                         \
            fprintf(stderr, "%s failed: %s: %s\n", #call, deconv_status_name((int)st_), \
                    deconv_last_error());                                               \
            exit(2);                                                                    \
        }                                                                               \
    } while (0)

/* One training step and an inference pass on an OpenBLAS layer of `batch` images; checks
 * the host's OpenBLAS thread count is `expect` after each call. */
static void train_step(size_t batch, int expect) {
    deconv_config cfg;
    TRY(deconv_config_default(&cfg, batch, 3, 6, 6, 4, 4));
    cfg.stride[0] = cfg.stride[1] = 2;
    cfg.pad[0] = cfg.pad[1] = 1;
    cfg.activation = DECONV_ACTIVATION_LEAKY;
    cfg.batch_normalize = 1;
    deconv_layer *layer = NULL;
    TRY(deconv_layer_create(&cfg, DECONV_BACKEND_OPENBLAS, &layer));
    deconv_geometry g;
    TRY(deconv_layer_geometry(layer, &g));
    float *input = calloc(g.input_len, sizeof *input);
    if (!input) exit(2);
    for (size_t i = 0; i < g.input_len; i++) input[i] = (float)(i % 7) * 0.25f;
    char what[96];

    TRY(deconv_layer_forward(layer, input, g.input_len, DECONV_MODE_TRAIN));
    snprintf(what, sizeof what, "batch %zu: after forward, OpenBLAS threads = %d", batch,
             openblas_get_num_threads());
    check(openblas_get_num_threads() == expect, what);
    float *delta;
    size_t delta_len;
    TRY(deconv_layer_delta(layer, &delta, &delta_len));
    for (size_t i = 0; i < delta_len; i++) delta[i] = 0.5f;
    TRY(deconv_layer_backward(layer, input, g.input_len, NULL, 0));
    snprintf(what, sizeof what, "batch %zu: after backward, OpenBLAS threads = %d", batch,
             openblas_get_num_threads());
    check(openblas_get_num_threads() == expect, what);
    deconv_update_args args;
    TRY(deconv_update_args_sgd(&args, 0.01f, 0.9f, 0.0005f, batch));
    TRY(deconv_layer_update(layer, &args));
    TRY(deconv_layer_forward(layer, input, g.input_len, DECONV_MODE_INFERENCE));
    snprintf(what, sizeof what, "batch %zu: after inference, OpenBLAS threads = %d", batch,
             openblas_get_num_threads());
    check(openblas_get_num_threads() == expect, what);
    free(input);
    TRY(deconv_layer_free(layer));
}

int main(void) {
    int compiled = 0;
    TRY(deconv_backend_compiled(DECONV_BACKEND_OPENBLAS, &compiled));
    if (!compiled) {
        fprintf(stderr, "this libdeconv has no OpenBLAS backend (build it with --features openblas)\n");
        return 1;
    }
    const char *env = getenv("OPENBLAS_NUM_THREADS");
    int start = openblas_get_num_threads();
    printf("OPENBLAS_NUM_THREADS=%s; openblas_get_num_threads() = %d at start\n",
           env ? env : "(unset)", start);
    check(env != NULL && atoi(env) == start && start > 1,
          "OpenBLAS starts with the environment's count, more than 1");
    train_step(1, start);
    train_step(4, start);
    /* A count the host sets between calls is kept too. */
    openblas_set_num_threads(1);
    train_step(4, 1);
    openblas_set_num_threads(start);
    train_step(1, start);
    if (failures) {
        printf("%d check(s) FAILED\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
