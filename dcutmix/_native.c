/* The box mixers' CPU kernels: dcutmix/native.py builds this file with the system's C compiler
 * on first use and calls it through ctypes; mixing.py falls back to its tensor code without it.
 *
 * Plain C99 on raw buffers (no Python or torch headers), so it builds in a fraction of a second.
 * Each entry point returns 0, or a negative code for input the Python side never passes (it
 * raises on one): the kernels check every index they follow, so bad input cannot read or write
 * out of bounds.
 *
 * Images are addressed in bytes: sample b, plane p, row y, pixel x starts at
 *   b * sample_stride + p * plane_stride + y * row_stride + x * pixel_bytes.
 * Contiguous NCHW: planes = C, pixel_bytes = the element size. Channels-last: planes = 1 and
 * pixel_bytes = C * the element size, so a run of pixels is one contiguous run of bytes. Either
 * way a plane's rows are contiguous: plane_stride = height * row_stride.
 */

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { BAD_SOURCE = -1, BAD_LEVEL = -2, BAD_BOX = -3, NO_MEMORY = -4, BAD_CLASS = -5 };

typedef struct {
    const char *src;
    char *dst;
    int64_t batch, planes, height, width;
    int64_t sample_stride, plane_stride, row_stride, pixel_bytes;
    const int64_t *partners; /* (levels - 1, batch): the sample level l >= 1 of each image shows */
    int64_t levels;
    /* nested boxes: level = min(rows[y], cols[x]) of the image's (or the shared) profiles */
    const int32_t *rows, *cols;
    int64_t profiles; /* batch, or 1 when the batch shares them */
    /* any other shape: a level per pixel */
    const int64_t *map;
    int64_t maps; /* batch, or 1 */
    int64_t first, last; /* the samples [first, last) one thread does */
    int64_t status;
} paste_job;

/* DCutMix's nested boxes, the tensor code of DCutMix._plan step by step in float32 (same
 * rounding, so the same boxes for the same draws). For each of n images and each box j + 1 of
 * the steps boxes: shrink[(steps - 1 - j) * n + i] scales box j's sides, rounded to whole pixels;
 * offsets[(2 j + a) * n + i] in [0, 1) places it inside box j along axis a (0 rows, 1 columns).
 * Writes each image's depth profiles rows (n, height) and cols (n, width), whose minimum is the
 * level of a pixel, and visible (n, steps + 1): the share of the image each level shows. */
int64_t dcutmix_nested_boxes(int64_t n, int64_t steps, int64_t height, int64_t width,
                             const float *shrink, const float *offsets, int32_t *rows,
                             int32_t *cols, float *visible)
{
    const float pixels = (float)height * (float)width;
    memset(rows, 0, (size_t)(n * height) * sizeof *rows);
    memset(cols, 0, (size_t)(n * width) * sizeof *cols);
    for (int64_t i = 0; i < n; ++i) {
        float side[2] = {(float)height, (float)width};
        float corner[2] = {0.0f, 0.0f};
        int32_t *profile[2] = {rows + i * height, cols + i * width};
        float area = side[0] * side[1];
        for (int64_t j = 0; j < steps; ++j) {
            const float scale = shrink[(steps - 1 - j) * n + i];
            for (int a = 0; a < 2; ++a) {
                const float inner = nearbyintf(side[a] * scale);
                const float slack = side[a] - inner;
                const float offset = floorf(offsets[(2 * j + a) * n + i] * (slack + 1.0f));
                corner[a] += offset < slack ? offset : slack;
                side[a] = inner;
                /* inside the image, or the draws were not what DCutMix._plan passes (NaN) */
                if (!(corner[a] >= 0.0f && inner >= 0.0f && corner[a] + inner <= (a ? width : height)))
                    return BAD_BOX;
                const int64_t start = (int64_t)corner[a], end = start + (int64_t)inner;
                for (int64_t p = start; p < end; ++p) profile[a][p] += 1;
            }
            const float inner_area = side[0] * side[1];
            visible[i * (steps + 1) + j] = (area - inner_area) / pixels;
            area = inner_area;
        }
        visible[i * (steps + 1) + steps] = area / pixels;
    }
    return 0;
}

/* Nested boxes: each image starts as its level-0 source, then box l (the pixels of depth >= l,
 * one rectangle because the boxes nest) is copied over it from its level-l source, outside in. */
static int64_t paste_nested(const paste_job *job)
{
    int64_t *span = malloc((size_t)(4 * job->levels) * sizeof *span);
    if (!span) return NO_MEMORY;
    int64_t *top = span, *bottom = span + job->levels;
    int64_t *left = span + 2 * job->levels, *right = span + 3 * job->levels;
    const int64_t height = job->height, width = job->width;
    for (int64_t b = job->first; b < job->last; ++b) {
        const int64_t shared = job->profiles > 1 ? b : 0;
        const int32_t *row_depth = job->rows + shared * height;
        const int32_t *col_depth = job->cols + shared * width;
        for (int64_t l = 0; l < job->levels; ++l) {
            top[l] = height, bottom[l] = 0, left[l] = width, right[l] = 0;
        }
        int64_t deepest = 0;
        for (int64_t y = 0; y < height; ++y) {
            if (row_depth[y] < 0 || row_depth[y] >= job->levels) {
                free(span);
                return BAD_LEVEL;
            }
            for (int32_t l = 1; l <= row_depth[y]; ++l) {
                if (y < top[l]) top[l] = y;
                bottom[l] = y + 1;
            }
        }
        for (int64_t x = 0; x < width; ++x) {
            if (col_depth[x] < 0 || col_depth[x] >= job->levels) {
                free(span);
                return BAD_LEVEL;
            }
            for (int32_t l = 1; l <= col_depth[x]; ++l) {
                if (x < left[l]) left[l] = x;
                right[l] = x + 1;
            }
        }
        for (int64_t l = 1; l < job->levels; ++l)
            if (bottom[l] > top[l] && right[l] > left[l]) deepest = l;
        const int64_t plane_bytes = height * job->row_stride;
        for (int64_t p = 0; p < job->planes; ++p) {
            char *dst = job->dst + b * job->sample_stride + p * job->plane_stride;
            const char *src = job->src + b * job->sample_stride + p * job->plane_stride;
            memcpy(dst, src, (size_t)plane_bytes);
            for (int64_t l = 1; l <= deepest; ++l) {
                const int64_t from = job->partners[(l - 1) * job->batch + b];
                src = job->src + from * job->sample_stride + p * job->plane_stride;
                const int64_t skip = left[l] * job->pixel_bytes;
                const size_t bytes = (size_t)((right[l] - left[l]) * job->pixel_bytes);
                for (int64_t y = top[l]; y < bottom[l]; ++y) {
                    const int64_t at = y * job->row_stride + skip;
                    memcpy(dst + at, src + at, bytes);
                }
            }
        }
    }
    free(span);
    return 0;
}

/* A level per pixel: each row is split into runs of one level, and each run is one copy. */
static int64_t paste_map(const paste_job *job)
{
    const int64_t width = job->width;
    int64_t *start = malloc((size_t)(2 * width + 1) * sizeof *start);
    if (!start) return NO_MEMORY;
    int64_t *from = start + width + 1;
    for (int64_t b = job->first; b < job->last; ++b) {
        const int64_t *level = job->map + (job->maps > 1 ? b : 0) * job->height * width;
        for (int64_t y = 0; y < job->height; ++y, level += width) {
            int64_t runs = 0;
            for (int64_t x = 0; x < width; ++x) {
                if (x > 0 && level[x] == level[x - 1]) continue;
                if (level[x] < 0 || level[x] >= job->levels) {
                    free(start);
                    return BAD_LEVEL;
                }
                start[runs] = x;
                from[runs++] = level[x] ? job->partners[(level[x] - 1) * job->batch + b] : b;
            }
            start[runs] = width;
            for (int64_t p = 0; p < job->planes; ++p) {
                const int64_t row = p * job->plane_stride + y * job->row_stride;
                char *dst = job->dst + b * job->sample_stride + row;
                for (int64_t r = 0; r < runs; ++r) {
                    const int64_t skip = start[r] * job->pixel_bytes;
                    memcpy(dst + skip, job->src + from[r] * job->sample_stride + row + skip,
                           (size_t)((start[r + 1] - start[r]) * job->pixel_bytes));
                }
            }
        }
    }
    free(start);
    return 0;
}

static void *run_job(void *arg)
{
    paste_job *job = arg;
    job->status = job->map ? paste_map(job) : paste_nested(job);
    return NULL;
}

enum { MAX_THREADS = 64 };

/* Every pixel of the batch from the sample its level names (level 0: the image itself, level
 * l >= 1: partners[l - 1][b]), given either the nested-box profiles rows (profiles, height) and cols (profiles, width), or map (maps,
 * height, width) when rows is NULL. The batch is split over `threads` threads. */
int64_t dcutmix_paste(const char *src, char *dst, int64_t batch, int64_t planes, int64_t height,
                      int64_t width, int64_t sample_stride, int64_t plane_stride,
                      int64_t row_stride, int64_t pixel_bytes, const int64_t *partners,
                      int64_t levels, const int32_t *rows, const int32_t *cols, int64_t profiles,
                      const int64_t *map, int64_t maps, int64_t threads)
{
    for (int64_t i = 0; i < batch * (levels - 1); ++i)
        if (partners[i] < 0 || partners[i] >= batch) return BAD_SOURCE;
    if (threads > batch) threads = batch;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads < 1) threads = 1;
    paste_job jobs[MAX_THREADS];
    pthread_t workers[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int64_t t = 0; t < threads; ++t) {
        jobs[t] = (paste_job){src, dst, batch, planes, height, width, sample_stride, plane_stride,
                              row_stride, pixel_bytes, partners, levels, rows ? rows : NULL,
                              rows ? cols : NULL, profiles, rows ? NULL : map, maps,
                              batch * t / threads, batch * (t + 1) / threads, 0};
    }
    int64_t status = 0;
    for (int64_t t = 1; t < threads; ++t) {
        started[t] = pthread_create(&workers[t], NULL, run_job, &jobs[t]) == 0;
        if (!started[t]) run_job(&jobs[t]); /* no thread to be had: do its share here */
    }
    run_job(&jobs[0]);
    for (int64_t t = 0; t < threads; ++t) {
        if (t > 0 && started[t]) pthread_join(workers[t], NULL);
        if (jobs[t].status && !status) status = jobs[t].status;
    }
    return status;
}

/* Soft targets from class indices: row b gets weights[b][l] (or the shared row's, when
 * weight_rows is 1) added into the class of its level-l source, in level order, like the
 * tensor code's scatter_add_, so the sums round alike. */
int64_t dcutmix_targets(int64_t batch, int64_t levels, int64_t classes, const int64_t *labels,
                        const int64_t *partners, const float *weights, int64_t weight_rows,
                        float *targets)
{
    memset(targets, 0, (size_t)(batch * classes) * sizeof *targets);
    for (int64_t b = 0; b < batch; ++b) {
        const float *weight = weights + (weight_rows > 1 ? b : 0) * levels;
        for (int64_t l = 0; l < levels; ++l) {
            const int64_t source = l ? partners[(l - 1) * batch + b] : b;
            if (source < 0 || source >= batch) return BAD_SOURCE;
            const int64_t label = labels[source];
            if (label < 0 || label >= classes) return BAD_CLASS;
            targets[b * classes + label] += weight[l];
        }
    }
    return 0;
}
