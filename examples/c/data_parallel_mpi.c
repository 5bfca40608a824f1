/*
 * Data-parallel training from C over MPI (include/deconv.h, "deconv_collective"): a global batch
 * of 6 images split over the ranks (unevenly: rank 0 takes the remainder), batch norm
 * synchronized, SGD with momentum; the ranks must end bit for bit equal, and rank 0 checks them
 * against one process training on the whole batch.
 *
 *   mpicc examples/c/data_parallel_mpi.c $(pkg-config --cflags --libs deconv) -o dp
 *   mpirun -np 2 ./dp
 *
 * The collective is two callbacks the library calls: MPI_Allreduce(MPI_IN_PLACE) and
 * MPI_Bcast on MPI_COMM_WORLD. Prints per-rank and global figures; exits non-zero on any
 * disagreement.
 */
#include <limits.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deconv.h"

#define GLOBAL_BATCH 6
#define STEPS 5
#define IN_C 3
#define IN_HW 4
#define FILTERS 4
#define OUT_HW 8

static MPI_Datatype mpi_type(int precision) {
    return precision == DECONV_PRECISION_F64 ? MPI_DOUBLE : MPI_FLOAT;
}

/* deconv_allreduce_fn: an in-place sum over every rank. */
static int allreduce_sum(void *data, size_t count, int precision, void *context) {
    if (count > INT_MAX) return 1;
    MPI_Comm comm = *(MPI_Comm *)context;
    return MPI_Allreduce(MPI_IN_PLACE, data, (int)count, mpi_type(precision), MPI_SUM, comm);
}

/* deconv_broadcast_fn. */
static int broadcast(void *data, size_t count, int precision, int root, void *context) {
    if (count > INT_MAX) return 1;
    MPI_Comm comm = *(MPI_Comm *)context;
    return MPI_Bcast(data, (int)count, mpi_type(precision), root, comm);
}

#define TRY(call)                                                                            \
    do {                                                                                     \
        deconv_status st_ = (call);                                                          \
        if (st_ != DECONV_OK) {                                                              \
            fprintf(stderr, "rank %d: %s failed: %s: %s\n", rank, #call,                     \
                    deconv_status_name((int)st_), deconv_last_error());                      \
            MPI_Abort(MPI_COMM_WORLD, 2);                                                    \
        }                                                                                    \
    } while (0)

/* Image b of the global batch, and the gradient its loss gives, as plain functions of b. */
static float input_value(int b, int i) { return (float)(((b * 97 + i * 37) % 11) - 5) * 0.1f; }
static float delta_value(int b, int i) { return (float)(((b * 31 + i * 13) % 7) - 3) * 0.05f; }

static deconv_config config(size_t batch) {
    deconv_config c;
    deconv_config_default(&c, batch, IN_C, IN_HW, IN_HW, FILTERS, 4);
    c.stride[0] = c.stride[1] = 2;
    c.pad[0] = c.pad[1] = 1;
    c.batch_normalize = 1;
    c.activation = DECONV_ACTIVATION_LEAKY;
    return c;
}

/* STEPS steps of images first .. first + batch - 1, on `dp` (or alone when dp is NULL). */
static void train(int rank, deconv_layer *layer, deconv_data_parallel *dp, int first, int batch) {
    const size_t in_len = (size_t)batch * IN_C * IN_HW * IN_HW;
    const size_t out_len = (size_t)batch * FILTERS * OUT_HW * OUT_HW;
    float *x = malloc(in_len * sizeof *x), *d = malloc(out_len * sizeof *d);
    if (!x || !d) MPI_Abort(MPI_COMM_WORLD, 3);
    for (size_t i = 0; i < in_len; i++)
        x[i] = input_value(first + (int)(i / (IN_C * IN_HW * IN_HW)), (int)(i % (IN_C * IN_HW * IN_HW)));
    for (size_t i = 0; i < out_len; i++)
        d[i] = delta_value(first + (int)(i / (FILTERS * OUT_HW * OUT_HW)), (int)(i % (FILTERS * OUT_HW * OUT_HW)));
    deconv_update_args args;
    TRY(deconv_update_args_sgd(&args, 0.1f, 0.9f, 0.0005f, GLOBAL_BATCH));
    for (int step = 0; step < STEPS; step++) {
        if (dp)
            TRY(deconv_data_parallel_forward(dp, layer, x, in_len, DECONV_MODE_TRAIN));
        else
            TRY(deconv_layer_forward(layer, x, in_len, DECONV_MODE_TRAIN));
        TRY(deconv_layer_set(layer, DECONV_BUFFER_DELTA, d, out_len));
        if (dp)
            TRY(deconv_data_parallel_backward(dp, layer, x, in_len, NULL, 0));
        else
            TRY(deconv_layer_backward(layer, x, in_len, NULL, 0));
        TRY(deconv_layer_update(layer, &args));
    }
    free(x);
    free(d);
}

int main(int argc, char **argv) {
    (void)argc;
    (void)argv;
    int provided = 0, rank = 0, size = 1;
    /* The callbacks run on the calling thread unless deconv_set_num_threads moved the calls
     * to the library's threads; SERIALIZED covers both. */
    MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size > GLOBAL_BATCH) {
        if (rank == 0) fprintf(stderr, "at most %d ranks\n", GLOBAL_BATCH);
        MPI_Finalize();
        return 2;
    }
    /* Uneven parts: GLOBAL_BATCH / size each, the remainder on rank 0. */
    const int part = GLOBAL_BATCH / size, extra = GLOBAL_BATCH % size;
    const int batch = part + (rank == 0 ? extra : 0);
    const int first = rank == 0 ? 0 : extra + rank * part;

    MPI_Comm comm = MPI_COMM_WORLD;
    deconv_collective collective = {rank, size, allreduce_sum, broadcast, &comm};
    deconv_config c = config((size_t)batch);
    c.seed = (unsigned long long)rank; /* different on each rank: the broadcast evens them */
    deconv_layer *layer = NULL;
    TRY(deconv_layer_create(&c, DECONV_BACKEND_DEFAULT, &layer));
    deconv_data_parallel *dp = NULL;
    TRY(deconv_data_parallel_create(layer, &collective, 1, &dp));
    size_t global = 0;
    TRY(deconv_data_parallel_global_batch(dp, &global));
    TRY(deconv_data_parallel_broadcast_parameters(dp, layer, 0));
    double started = MPI_Wtime();
    train(rank, layer, dp, first, batch);
    double seconds = MPI_Wtime() - started;

    float w[IN_C * FILTERS * 16], mean[FILTERS], w0[IN_C * FILTERS * 16], mean0[FILTERS];
    TRY(deconv_layer_get(layer, DECONV_BUFFER_WEIGHTS, w, sizeof w / sizeof *w));
    TRY(deconv_layer_get(layer, DECONV_BUFFER_ROLLING_MEAN, mean, FILTERS));
    printf("rank %d of %d: images %d..%d of %zu, %d steps in %.3f s, w[0] %.7f rolling_mean[0] %.7f\n",
           rank, size, first, first + batch - 1, global, STEPS, seconds, w[0], mean[0]);

    /* The ranks agree bit for bit: rank 0's weights and statistics, broadcast, against each. */
    memcpy(w0, w, sizeof w);
    memcpy(mean0, mean, sizeof mean);
    MPI_Bcast(w0, (int)(sizeof w / sizeof *w), MPI_FLOAT, 0, comm);
    MPI_Bcast(mean0, FILTERS, MPI_FLOAT, 0, comm);
    int same = memcmp(w, w0, sizeof w) == 0 && memcmp(mean, mean0, sizeof mean) == 0, all_same = 0;
    MPI_Allreduce(&same, &all_same, 1, MPI_INT, MPI_LAND, comm);

    int failures = !all_same;
    if (rank == 0) {
        /* One process on the whole batch, from rank 0's initial weights (seed 0). */
        deconv_config whole = config(GLOBAL_BATCH);
        deconv_layer *one = NULL;
        TRY(deconv_layer_create(&whole, DECONV_BACKEND_DEFAULT, &one));
        train(rank, one, NULL, 0, GLOBAL_BATCH);
        float w1[IN_C * FILTERS * 16], mean1[FILTERS];
        TRY(deconv_layer_get(one, DECONV_BUFFER_WEIGHTS, w1, sizeof w1 / sizeof *w1));
        TRY(deconv_layer_get(one, DECONV_BUFFER_ROLLING_MEAN, mean1, FILTERS));
        float scale = 0, diff = 0;
        for (size_t i = 0; i < sizeof w / sizeof *w; i++) {
            scale = fmaxf(scale, fabsf(w1[i]));
            diff = fmaxf(diff, fabsf(w[i] - w1[i]));
        }
        float mscale = 0, mdiff = 0;
        for (int i = 0; i < FILTERS; i++) {
            mscale = fmaxf(mscale, fabsf(mean1[i]));
            mdiff = fmaxf(mdiff, fabsf(mean[i] - mean1[i]));
        }
        printf("global: %d ranks agree bit for bit: %s; against one process on %d images: "
               "weights within %.2e, rolling means within %.2e (relative)\n",
               size, all_same ? "yes" : "NO", GLOBAL_BATCH, diff / scale, mdiff / mscale);
        if (diff > 1e-5f * scale || mdiff > 1e-5f * mscale) failures++;
        TRY(deconv_layer_free(one));
    }
    TRY(deconv_data_parallel_free(dp));
    TRY(deconv_layer_free(layer));
    int any = 0;
    MPI_Allreduce(&failures, &any, 1, MPI_INT, MPI_MAX, comm);
    if (rank == 0) printf(any ? "FAILED\n" : "all checks passed\n");
    MPI_Finalize();
    return any ? 1 : 0;
}
