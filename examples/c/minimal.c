#include <stdio.h>
#include "deconv.h"

int main(void) {
    /* 1 image of 3 channels 8x8 -> 2 channels 16x16: kernel 4, stride 2, pad 1. */
    deconv_config cfg;
    deconv_config_default(&cfg, 1, 3, 8, 8, 2, 4); /* batch, channels, h, w, filters, kernel */
    cfg.stride[0] = cfg.stride[1] = 2;
    cfg.pad[0] = cfg.pad[1] = 1;
    cfg.activation = DECONV_ACTIVATION_LEAKY;

    deconv_layer *layer;
    if (deconv_layer_create(&cfg, DECONV_BACKEND_DEFAULT, &layer) != DECONV_OK) {
        fprintf(stderr, "%s\n", deconv_last_error());
        return 1;
    }
    deconv_geometry g;
    deconv_layer_geometry(layer, &g); /* g.out_h == g.out_w == 16, g.input_len == 192 */

    float input[3 * 8 * 8] = {0};
    deconv_status st = deconv_layer_forward(layer, input, g.input_len, DECONV_MODE_TRAIN);
    if (st != DECONV_OK) {
        fprintf(stderr, "%s: %s\n", deconv_status_name(st), deconv_last_error());
        return 1;
    }
    const float *out;
    size_t out_len;
    deconv_layer_output(layer, &out, &out_len);

    /* One SGD step on 0.5 * |out - 0.5|^2: delta is -dLoss/dOutput (Darknet's sign). */
    float *delta;
    size_t delta_len;
    deconv_layer_delta(layer, &delta, &delta_len);
    for (size_t i = 0; i < delta_len; i++) delta[i] = 0.5f - out[i];
    deconv_layer_backward(layer, input, g.input_len, NULL, 0); /* NULL: no input gradient */
    deconv_update_args args;
    deconv_update_args_sgd(&args, 0.01f, 0.9f, 0.0005f, 1); /* lr, momentum, decay, batch */
    deconv_layer_update(layer, &args);

    printf("output %zux%zux%zu, first value %g\n", g.filters, g.out_h, g.out_w, out[0]);
    deconv_layer_free(layer);
    return 0;
}
