/*
 * C example and check of deconv's C API (include/deconv.h). Built and run by
 * .ci/run (see README.md, "Using it from C"): one forward pass of a hand-computable layer, one SGD
 * training step checked against Darknet's update formula, a Darknet .weights round trip (to the
 * file named by argv[1], and in memory), and the error reporting.
 * Prints what it checks; exits non-zero on any mismatch.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deconv.h"

static int failures = 0;

/* Reports a check; counts failures. */
static void check(int ok, const char *what) {
    printf("  [%s] %s\n", ok ? " ok " : "FAIL", what);
    if (!ok) failures++;
}

/* One line of numbers that examples/fortran/deconv_example.f90 prints too; .ci/run compares
 * the two programs' "numbers:" lines. */
static void numbers(const char *name, const float *v, int n) {
    printf("numbers: %s", name);
    for (int i = 0; i < n; i++) printf(" %.6f", v[i]);
    printf("\n");
}

static int close_to(float a, float b) { return fabsf(a - b) <= 1e-5f * (1.0f + fabsf(b)); }

/* Calls a deconv function; on failure prints the status and message and exits. */
#define TRY(call)                                                                       \
    do {                                                                                \
        deconv_status st_ = (call);                                                     \
        if (st_ != DECONV_OK) {                                                         \
            fprintf(stderr, "%s failed: %s: %s\n", #call, deconv_status_name((int)st_), \
                    deconv_last_error());                                               \
            exit(2);                                                                    \
        }                                                                               \
    } while (0)

int main(int argc, char **argv) {
    printf("deconv %s, C API example\n", deconv_version());

    int openblas = 0;
    TRY(deconv_backend_compiled(DECONV_BACKEND_OPENBLAS, &openblas));

    /* 1 image, 1 channel of 2x2 -> 1 filter of 4x4: kernel 2, stride 2, no padding, linear.
     * Each input pixel x[i][j] stamps x[i][j] * w onto the output block at (2i, 2j). */
    deconv_config config;
    TRY(deconv_config_default(&config, 1, 1, 2, 2, 1, 2));
    config.stride[0] = config.stride[1] = 2;
    config.activation = DECONV_ACTIVATION_LINEAR;

    deconv_layer *layer = NULL;
    TRY(deconv_layer_create(&config, DECONV_BACKEND_DEFAULT, &layer));
    int backend = -1;
    TRY(deconv_layer_backend(layer, &backend));
    printf("backend: %s (openblas compiled in: %s)\n",
           backend == DECONV_BACKEND_OPENBLAS ? "openblas" : "matrixmultiply",
           openblas ? "yes" : "no");

    deconv_geometry g;
    TRY(deconv_layer_geometry(layer, &g));
    printf("geometry: input %zux%zux%zux%zu -> output %zux%zux%zux%zu, %zu weights\n", g.batch,
           g.in_channels, g.in_h, g.in_w, g.batch, g.filters, g.out_h, g.out_w, g.weight_count);
    check(g.out_h == 4 && g.out_w == 4 && g.output_len == 16 && g.weight_count == 4,
          "output is 4x4, 16 values, 4 weights");

    /* Parameters through the API: weights [c][n][kh][kw] = 1 2 / 3 4, bias 0.5. */
    const float w[4] = {1, 2, 3, 4};
    const float bias = 0.5f;
    TRY(deconv_layer_set(layer, DECONV_BUFFER_WEIGHTS, w, 4));
    TRY(deconv_layer_set(layer, DECONV_BUFFER_BIASES, &bias, 1));

    /* Forward pass, checked against numbers computed by hand. */
    const float x[4] = {1, 2, 3, 4};
    const float expected[16] = {
        1.5f, 2.5f,  2.5f,  4.5f,   /* x00*(1 2), x01*(1 2), + .5 */
        3.5f, 4.5f,  6.5f,  8.5f,   /* x00*(3 4), x01*(3 4)       */
        3.5f, 6.5f,  4.5f,  8.5f,   /* x10*(1 2), x11*(1 2)       */
        9.5f, 12.5f, 12.5f, 16.5f,  /* x10*(3 4), x11*(3 4)       */
    };
    printf("forward (inference), x = [1 2; 3 4], w = [1 2; 3 4], bias 0.5:\n");
    TRY(deconv_layer_forward(layer, x, 4, DECONV_MODE_INFERENCE));
    const float *y = NULL;
    size_t y_len = 0;
    TRY(deconv_layer_output(layer, &y, &y_len));
    int same = y_len == 16;
    for (size_t k = 0; same && k < 16; k++) same = y[k] == expected[k];
    for (size_t r = 0; r < 4; r++)
        printf("    %5.1f %5.1f %5.1f %5.1f\n", y[4 * r], y[4 * r + 1], y[4 * r + 2], y[4 * r + 3]);
    check(same, "forward output equals the hand-computed 4x4 block pattern");
    numbers("forward", y, 16);

    /* One SGD training step towards target t (loss 0.5 * |y - t|^2): delta = t - y. */
    const float lr = 0.01f, momentum = 0.9f, decay = 0.01f;
    float t[16], delta_copy[16];
    for (int k = 0; k < 16; k++) t[k] = (float)(k % 5);
    TRY(deconv_layer_forward(layer, x, 4, DECONV_MODE_TRAIN));
    TRY(deconv_layer_output(layer, &y, &y_len));
    float loss_before = 0;
    float *delta = NULL;
    size_t delta_len = 0;
    TRY(deconv_layer_delta(layer, &delta, &delta_len));
    for (int k = 0; k < 16; k++) {
        delta[k] = delta_copy[k] = t[k] - y[k];
        loss_before += 0.5f * delta[k] * delta[k];
    }
    float dx[4] = {0, 0, 0, 0};
    TRY(deconv_layer_backward(layer, x, 4, dx, 4));

    /* Expected gradients (descent directions), from the definition of the layer:
     * weight update w[a][b] += sum_ij x[i][j] * delta[2i+a][2j+b], bias update += sum delta,
     * input delta dx[i][j] += sum_ab w[a][b] * delta[2i+a][2j+b]. */
    float wu[4] = {0, 0, 0, 0}, bu = 0, dx_expected[4] = {0, 0, 0, 0};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            for (int a = 0; a < 2; a++)
                for (int b = 0; b < 2; b++) {
                    float d = delta_copy[(2 * i + a) * 4 + 2 * j + b];
                    wu[2 * a + b] += x[2 * i + j] * d;
                    dx_expected[2 * i + j] += w[2 * a + b] * d;
                }
    for (int k = 0; k < 16; k++) bu += delta_copy[k];
    float got_wu[4], got_bu;
    TRY(deconv_layer_get(layer, DECONV_BUFFER_WEIGHT_UPDATES, got_wu, 4));
    TRY(deconv_layer_get(layer, DECONV_BUFFER_BIAS_UPDATES, &got_bu, 1));
    printf("backward with delta = t - y (loss %.4f):\n", loss_before);
    printf("    weight_updates %8.3f %8.3f %8.3f %8.3f  (expected %.3f %.3f %.3f %.3f)\n",
           got_wu[0], got_wu[1], got_wu[2], got_wu[3], wu[0], wu[1], wu[2], wu[3]);
    printf("    bias_update    %8.3f                             (expected %.3f)\n", got_bu, bu);
    printf("    input delta    %8.3f %8.3f %8.3f %8.3f  (expected %.3f %.3f %.3f %.3f)\n", dx[0],
           dx[1], dx[2], dx[3], dx_expected[0], dx_expected[1], dx_expected[2], dx_expected[3]);
    int grads_ok = close_to(got_bu, bu);
    for (int k = 0; k < 4; k++)
        grads_ok = grads_ok && close_to(got_wu[k], wu[k]) && close_to(dx[k], dx_expected[k]);
    check(grads_ok, "weight, bias and input gradients match the definition");
    numbers("weight_updates", got_wu, 4);
    numbers("bias_update", &got_bu, 1);
    numbers("input_delta", dx, 4);

    /* SGD (Darknet's update_deconvolutional_layer, batch 1):
     * weight_updates -= decay * batch * w; w += lr / batch * weight_updates;
     * weight_updates *= momentum; bias += lr / batch * bias_updates; bias_updates *= momentum. */
    deconv_update_args args;
    TRY(deconv_update_args_sgd(&args, lr, momentum, decay, 1));
    TRY(deconv_layer_update(layer, &args));
    float new_w[4], new_wu[4], new_b, new_bu;
    TRY(deconv_layer_get(layer, DECONV_BUFFER_WEIGHTS, new_w, 4));
    TRY(deconv_layer_get(layer, DECONV_BUFFER_WEIGHT_UPDATES, new_wu, 4));
    TRY(deconv_layer_get(layer, DECONV_BUFFER_BIASES, &new_b, 1));
    TRY(deconv_layer_get(layer, DECONV_BUFFER_BIAS_UPDATES, &new_bu, 1));
    printf("SGD step, lr %.2f, momentum %.2f, decay %.2f:\n", lr, momentum, decay);
    int sgd_ok = close_to(new_b, bias + lr * bu) && close_to(new_bu, momentum * bu);
    for (int k = 0; k < 4; k++) {
        float u = wu[k] - decay * w[k];
        float expect_w = w[k] + lr * u;
        printf("    w[%d] %.4f -> %.4f  (expected %.4f)\n", k, w[k], new_w[k], expect_w);
        sgd_ok = sgd_ok && close_to(new_w[k], expect_w) && close_to(new_wu[k], momentum * u);
    }
    printf("    bias %.4f -> %.4f  (expected %.4f)\n", bias, new_b, bias + lr * bu);
    check(sgd_ok, "weights, bias and momentum buffers follow the SGD formula");
    numbers("weights_after_sgd", new_w, 4);
    numbers("bias_after_sgd", &new_b, 1);

    TRY(deconv_layer_forward(layer, x, 4, DECONV_MODE_INFERENCE));
    TRY(deconv_layer_output(layer, &y, &y_len));
    float loss_after = 0;
    for (int k = 0; k < 16; k++) loss_after += 0.5f * (t[k] - y[k]) * (t[k] - y[k]);
    printf("    loss %.4f -> %.4f\n", loss_before, loss_after);
    check(loss_after < loss_before, "the loss dropped");

    deconv_status st;

    /* Darknet .weights round trip: save, load into a layer with other random weights, compare. */
    const char *path = argc > 1 ? argv[1] : "deconv_example.weights";
    deconv_weights_header header;
    TRY(deconv_weights_header_default(&header, 64));
    TRY(deconv_layer_save_weights(layer, path, &header));
    deconv_config other_config = config;
    other_config.seed = 42;
    deconv_layer *copy = NULL;
    TRY(deconv_layer_create(&other_config, DECONV_BACKEND_DEFAULT, &copy));
    deconv_weights_header read_header;
    TRY(deconv_layer_load_weights(copy, path, 1, &read_header));
    float copy_w[4], copy_b;
    TRY(deconv_layer_get(copy, DECONV_BUFFER_WEIGHTS, copy_w, 4));
    TRY(deconv_layer_get(copy, DECONV_BUFFER_BIASES, &copy_b, 1));
    printf(".weights file %s (version %d.%d.%d, seen %llu):\n", path, (int)read_header.major,
           (int)read_header.minor, (int)read_header.revision,
           (unsigned long long)read_header.seen);
    check(memcmp(copy_w, new_w, sizeof copy_w) == 0 && copy_b == new_b && read_header.seen == 64,
          "saved and loaded weights, bias and header are identical");
    size_t bytes = 0;
    TRY(deconv_layer_weights_byte_len(layer, NULL, &bytes));
    unsigned char *data = malloc(bytes);
    if (!data) return 2;
    TRY(deconv_layer_write_weights(layer, NULL, data, bytes));
    check(bytes == 20 + 4 * (1 + 4), "in memory: 20-byte header, 1 bias and 4 weights");
    st = deconv_layer_read_weights(copy, data, bytes - 1, 0, NULL);
    printf("    one byte short: %s: %s\n", deconv_status_name((int)st), deconv_last_error());
    check(st == DECONV_ERR_FORMAT, "truncated data is DECONV_ERR_FORMAT");
    TRY(deconv_layer_read_weights(copy, data, bytes, 0, NULL));
    free(data);
    st = deconv_layer_load_weights(copy, "/nonexistent/deconv.weights", 0, NULL);
    printf("    missing file: %s: %s\n", deconv_status_name((int)st), deconv_last_error());
    check(st == DECONV_ERR_IO, "a missing file is DECONV_ERR_IO");
    TRY(deconv_layer_free(copy));

    /* Errors: a status and a message, nothing else happens. */
    printf("errors:\n");
    st = deconv_layer_forward(layer, x, 3, DECONV_MODE_INFERENCE);
    printf("    short input: %s: %s\n", deconv_status_name((int)st), deconv_last_error());
    check(st == DECONV_ERR_BUFFER_LENGTH, "a wrong buffer length is DECONV_ERR_BUFFER_LENGTH");
    st = deconv_layer_forward(layer, NULL, 4, DECONV_MODE_INFERENCE);
    printf("    NULL input: %s: %s\n", deconv_status_name((int)st), deconv_last_error());
    check(st == DECONV_ERR_NULL_POINTER, "a NULL buffer is DECONV_ERR_NULL_POINTER");
    deconv_config bad = config;
    bad.pad[0] = 2;
    deconv_layer *none = (deconv_layer *)&bad; /* must be reset to NULL */
    st = deconv_layer_create(&bad, DECONV_BACKEND_DEFAULT, &none);
    printf("    pad 2: %s: %s\n", deconv_status_name((int)st), deconv_last_error());
    check(st == DECONV_ERR_INVALID_PARAMETER && none == NULL,
          "an invalid config is DECONV_ERR_INVALID_PARAMETER and *out is NULL");
    st = deconv_layer_get(layer, DECONV_BUFFER_SCALES, new_w, 1);
    printf("    scales without batch norm: %s: %s\n", deconv_status_name((int)st),
           deconv_last_error());
    check(st == DECONV_ERR_INVALID_STATE, "a batch-norm buffer without batch norm is an error");

    /* Sizes beyond any machine's memory are an error, never an abort; element counts whose
     * bytes do not fit are an overflow. */
    if (sizeof(size_t) >= 8) {
        deconv_config huge;
        TRY(deconv_config_default(&huge, 1, 1, (size_t)1 << 20, (size_t)1 << 20, 1, 1));
        none = (deconv_layer *)&huge;
        st = deconv_layer_create(&huge, DECONV_BACKEND_DEFAULT, &none);
        printf("    a 4 TiB output: %s: %s\n", deconv_status_name((int)st), deconv_last_error());
        check(st == DECONV_ERR_ALLOCATION && none == NULL,
              "a layer larger than memory is DECONV_ERR_ALLOCATION, not an abort");
        TRY(deconv_config_default(&huge, 1, 1, 1, 1, (size_t)1 << 62, 1));
        st = deconv_layer_create(&huge, DECONV_BACKEND_DEFAULT, &none);
        printf("    2^62 filters: %s: %s\n", deconv_status_name((int)st), deconv_last_error());
        check(st == DECONV_ERR_OVERFLOW, "byte sizes beyond isize are DECONV_ERR_OVERFLOW");
    }

    /* A layer built for inference only holds no gradient state; training it is an error. */
    deconv_config lean = config;
    lean.training = 0;
    deconv_layer *infer = NULL;
    TRY(deconv_layer_create(&lean, DECONV_BACKEND_DEFAULT, &infer));
    float *lean_delta = NULL;
    size_t lean_delta_len = 1;
    TRY(deconv_layer_delta(infer, &lean_delta, &lean_delta_len));
    const float x4[4] = {1, 2, 3, 4};
    TRY(deconv_layer_forward(infer, x4, 4, DECONV_MODE_INFERENCE));
    st = deconv_layer_forward(infer, x4, 4, DECONV_MODE_TRAIN);
    printf("    training an inference-only layer: %s: %s\n", deconv_status_name((int)st),
           deconv_last_error());
    check(lean_delta_len == 0 && st == DECONV_ERR_INVALID_STATE,
          "an inference-only layer has no delta and cannot train");
    TRY(deconv_layer_free(infer));

    TRY(deconv_layer_free(layer));
    if (failures) {
        printf("%d check(s) FAILED\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
