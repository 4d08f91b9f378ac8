/* The mixers' CPU kernels: dcutmix/native.py builds this file with the system's C compiler on
 * first use and calls it through ctypes; mixing.py falls back to its tensor code without it.
 *
 * Plain C99 on raw buffers (no Python or torch headers), so it builds in a fraction of a second.
 * Each entry point returns 0, or a negative code for input the Python side never passes (it
 * raises on one): the kernels check every index and box they follow, and native.py checks the
 * shapes of the buffers, so bad input cannot read or write out of bounds.
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

enum {
    BAD_SOURCE = -1,
    BAD_LEVEL = -2,
    BAD_BOX = -3,
    NO_MEMORY = -4,
    BAD_CLASS = -5,
    NOT_NESTED = -6,
    BAD_ITEM = -7,
};

/* at most this many threads; levels: the K <= 64 sources of mixing.MAX_K */
enum { MAX_THREADS = 64, MAX_LEVELS = 64 };

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

/* Nested boxes. Box l (the pixels of depth >= l) is one rectangle because the boxes nest; its
 * rows and columns are found from the profiles, which are checked to be nested spans. Narrow
 * images (rows of fewer than RUN_BYTES bytes, CIFAR's 32 pixels) start as their level-0 plane and
 * get box after box copied over it, outside in: fewer, longer copies. Wide images copy each
 * level's frame instead, so every pixel is written once. */
enum { RUN_BYTES = 512 };

static int64_t paste_nested(const void *arg, int64_t first, int64_t last)
{
    const paste_job *job = arg;
    const int64_t levels = job->levels, height = job->height, width = job->width;
    int64_t *span = malloc((size_t)(6 * levels) * sizeof *span);
    if (!span) return NO_MEMORY;
    int64_t *top = span, *bottom = top + levels, *left = bottom + levels, *right = left + levels;
    int64_t *tall = right + levels, *wide = tall + levels;
    int64_t status = 0;
    for (int64_t b = first; b < last && !status; ++b) {
        const int64_t shared = job->profiles > 1 ? b : 0;
        const int32_t *row_depth = job->rows + shared * height;
        const int32_t *col_depth = job->cols + shared * width;
        for (int64_t l = 0; l < levels; ++l) {
            top[l] = height, bottom[l] = 0, left[l] = width, right[l] = 0, tall[l] = wide[l] = 0;
        }
        top[0] = 0, bottom[0] = height, left[0] = 0, right[0] = width; /* the whole image */
        for (int64_t y = 0; y < height && !status; ++y) {
            if (row_depth[y] < 0 || row_depth[y] >= levels) status = BAD_LEVEL;
            for (int32_t l = 1; l <= row_depth[y] && !status; ++l) {
                if (y < top[l]) top[l] = y;
                bottom[l] = y + 1, tall[l] += 1;
            }
        }
        for (int64_t x = 0; x < width && !status; ++x) {
            if (col_depth[x] < 0 || col_depth[x] >= levels) status = BAD_LEVEL;
            for (int32_t l = 1; l <= col_depth[x] && !status; ++l) {
                if (x < left[l]) left[l] = x;
                right[l] = x + 1, wide[l] += 1;
            }
        }
        int64_t deepest = 0;
        for (int64_t l = 1; l < levels && !status; ++l) {
            const int64_t rows = bottom[l] - top[l], cols = right[l] - left[l];
            if ((tall[l] && rows != tall[l]) || (wide[l] && cols != wide[l])) status = NOT_NESTED;
            else if ((tall[l] && (top[l] < top[l - 1] || bottom[l] > bottom[l - 1])) ||
                     (wide[l] && (left[l] < left[l - 1] || right[l] > right[l - 1])))
                status = NOT_NESTED;
            else if (tall[l] && wide[l]) deepest = l;
        }
        if (status) break;
        if (width * job->pixel_bytes < RUN_BYTES) {
            const int64_t plane_bytes = height * job->row_stride;
            for (int64_t p = 0; p < job->planes; ++p) {
                char *dst = job->dst + b * job->sample_stride + p * job->plane_stride;
                const char *src = job->src + b * job->sample_stride + p * job->plane_stride;
                memcpy(dst, src, (size_t)plane_bytes);
                for (int64_t l = 1; l <= deepest; ++l) {
                    const int64_t partner = job->partners[(l - 1) * job->batch + b];
                    src = job->src + partner * job->sample_stride + p * job->plane_stride;
                    const int64_t skip = left[l] * job->pixel_bytes;
                    const size_t bytes = (size_t)((right[l] - left[l]) * job->pixel_bytes);
                    for (int64_t y = top[l]; y < bottom[l]; ++y) {
                        const int64_t at = y * job->row_stride + skip;
                        memcpy(dst + at, src + at, bytes);
                    }
                }
            }
            continue;
        }
        /* level l shows its frame: box l less box l + 1 (nothing inside the deepest box), as
         * up to four rectangles copied row after row, so each copy reads the row below the last */
        for (int64_t p = 0; p < job->planes; ++p) {
            char *dst = job->dst + b * job->sample_stride + p * job->plane_stride;
            for (int64_t l = 0; l <= deepest; ++l) {
                const int64_t partner = l ? job->partners[(l - 1) * job->batch + b] : b;
                const char *src = job->src + partner * job->sample_stride + p * job->plane_stride;
                const int64_t inner_top = l < deepest ? top[l + 1] : bottom[l];
                const int64_t inner_bottom = l < deepest ? bottom[l + 1] : bottom[l];
                const int64_t inner_left = l < deepest ? left[l + 1] : right[l];
                const int64_t inner_right = l < deepest ? right[l + 1] : right[l];
                const int64_t x0 = left[l] * job->pixel_bytes;
                const size_t whole = (size_t)((right[l] - left[l]) * job->pixel_bytes);
                const size_t west = (size_t)((inner_left - left[l]) * job->pixel_bytes);
                const int64_t x1 = inner_right * job->pixel_bytes;
                const size_t east = (size_t)((right[l] - inner_right) * job->pixel_bytes);
                for (int64_t y = top[l]; y < inner_top; ++y)
                    memcpy(dst + y * job->row_stride + x0, src + y * job->row_stride + x0, whole);
                if (west)
                    for (int64_t y = inner_top; y < inner_bottom; ++y)
                        memcpy(dst + y * job->row_stride + x0, src + y * job->row_stride + x0, west);
                if (east)
                    for (int64_t y = inner_top; y < inner_bottom; ++y)
                        memcpy(dst + y * job->row_stride + x1, src + y * job->row_stride + x1, east);
                for (int64_t y = inner_bottom; y < bottom[l]; ++y)
                    memcpy(dst + y * job->row_stride + x0, src + y * job->row_stride + x0, whole);
            }
        }
    }
    free(span);
    return status;
}

/* A level per pixel: each row is split into runs of one level, and each run is one copy. A
 * shared map (maps = 1) is split once for the whole batch; the copies go plane by plane, row after
 * row, so consecutive copies read neighbouring rows. */
static int64_t paste_map(const void *arg, int64_t first, int64_t last)
{
    const paste_job *job = arg;
    const int64_t height = job->height, width = job->width;
    int64_t *count = malloc((size_t)(height * (2 * width + 2)) * sizeof *count);
    if (!count) return NO_MEMORY;
    int64_t *start = count + height, *level_of = start + height * (width + 1);
    int64_t split = -1; /* the map whose runs the tables hold */
    for (int64_t b = first; b < last; ++b) {
        const int64_t m = job->maps > 1 ? b : 0;
        if (m != split) {
            const int64_t *level = job->map + m * height * width;
            for (int64_t y = 0; y < height; ++y, level += width) {
                int64_t runs = 0, *row_start = start + y * (width + 1);
                for (int64_t x = 0; x < width; ++x) {
                    if (x > 0 && level[x] == level[x - 1]) continue;
                    if (level[x] < 0 || level[x] >= job->levels) {
                        free(count);
                        return BAD_LEVEL;
                    }
                    row_start[runs] = x;
                    level_of[y * width + runs++] = level[x];
                }
                row_start[runs] = width;
                count[y] = runs;
            }
            split = m;
        }
        for (int64_t p = 0; p < job->planes; ++p) {
            for (int64_t y = 0; y < height; ++y) {
                const int64_t row = p * job->plane_stride + y * job->row_stride;
                const int64_t *row_start = start + y * (width + 1);
                char *dst = job->dst + b * job->sample_stride + row;
                for (int64_t r = 0; r < count[y]; ++r) {
                    const int64_t l = level_of[y * width + r];
                    const int64_t from = l ? job->partners[(l - 1) * job->batch + b] : b;
                    const int64_t skip = row_start[r] * job->pixel_bytes;
                    memcpy(dst + skip, job->src + from * job->sample_stride + row + skip,
                           (size_t)((row_start[r + 1] - row_start[r]) * job->pixel_bytes));
                }
            }
        }
    }
    free(count);
    return 0;
}

/* partners (levels - 1, batch): every index inside the batch, and a level count mixing allows */
static int64_t check_partners(const int64_t *partners, int64_t levels, int64_t batch)
{
    if (levels < 1 || levels > MAX_LEVELS) return BAD_LEVEL;
    for (int64_t i = 0; i < batch * (levels - 1); ++i)
        if (partners[i] < 0 || partners[i] >= batch) return BAD_SOURCE;
    return 0;
}

/* One thread's share of a batch: samples [first, last). */
typedef int64_t (*sample_work)(const void *job, int64_t first, int64_t last);

typedef struct {
    sample_work work;
    const void *job;
    int64_t first, last, status;
} share;

static void *run_share(void *arg)
{
    share *part = arg;
    part->status = part->work(part->job, part->first, part->last);
    return NULL;
}

/* `work` over the batch's samples, split over `threads` threads (this one included). */
static int64_t over_samples(sample_work work, const void *job, int64_t batch, int64_t threads)
{
    if (threads > batch) threads = batch;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads < 1) threads = 1;
    share parts[MAX_THREADS];
    pthread_t workers[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int64_t t = 0; t < threads; ++t)
        parts[t] = (share){work, job, batch * t / threads, batch * (t + 1) / threads, 0};
    for (int64_t t = 1; t < threads; ++t) {
        started[t] = pthread_create(&workers[t], NULL, run_share, &parts[t]) == 0;
        if (!started[t]) run_share(&parts[t]); /* no thread to be had: do its share here */
    }
    run_share(&parts[0]);
    int64_t status = 0;
    for (int64_t t = 0; t < threads; ++t) {
        if (t > 0 && started[t]) pthread_join(workers[t], NULL);
        if (parts[t].status && !status) status = parts[t].status;
    }
    return status;
}

/* Every pixel of the batch from the sample its level names (level 0: the image itself, level
 * l >= 1: partners[l - 1][b]), given either the nested-box profiles rows (profiles, height) and
 * cols (profiles, width), or map (maps, height, width) when rows is NULL. */
int64_t dcutmix_paste(const char *src, char *dst, int64_t batch, int64_t planes, int64_t height,
                      int64_t width, int64_t sample_stride, int64_t plane_stride,
                      int64_t row_stride, int64_t pixel_bytes, const int64_t *partners,
                      int64_t levels, const int32_t *rows, const int32_t *cols, int64_t profiles,
                      const int64_t *map, int64_t maps, int64_t threads)
{
    const int64_t bad = check_partners(partners, levels, batch);
    if (bad) return bad;
    const paste_job job = {src, dst, batch, planes, height, width, sample_stride, plane_stride,
                           row_stride, pixel_bytes, partners, levels, rows, rows ? cols : NULL,
                           profiles, rows ? NULL : map, maps};
    return over_samples(rows ? paste_nested : paste_map, &job, batch, threads);
}

/* Cutout: each image with a square of zeros (all its channels), clipped at the borders. start
 * (2, n) holds each square's first row and column, which may lie outside the image; n = batch,
 * or 1 for a shared square. Zero bytes are 0 in every dtype (+0.0 for floats). */
typedef struct {
    paste_job image;
    const float *start;
    int64_t n, length;
} cutout_job;

static int64_t cut_out(const void *arg, int64_t first, int64_t last)
{
    const cutout_job *job = arg;
    const paste_job *image = &job->image;
    const int64_t plane_bytes = image->height * image->row_stride;
    for (int64_t b = first; b < last; ++b) {
        const int64_t s = job->n > 1 ? b : 0;
        const float row = job->start[s], col = job->start[job->n + s];
        if (!(row > -1e9f && row < 1e9f && col > -1e9f && col < 1e9f)) return BAD_BOX;
        int64_t top = (int64_t)row, left = (int64_t)col;
        int64_t bottom = top + job->length, right = left + job->length;
        if (top < 0) top = 0;
        if (left < 0) left = 0;
        if (bottom > image->height) bottom = image->height;
        if (right > image->width) right = image->width;
        for (int64_t p = 0; p < image->planes; ++p) {
            const int64_t at = b * image->sample_stride + p * image->plane_stride;
            memcpy(image->dst + at, image->src + at, (size_t)plane_bytes);
            if (right <= left) continue;
            for (int64_t y = top; y < bottom; ++y)
                memset(image->dst + at + y * image->row_stride + left * image->pixel_bytes, 0,
                       (size_t)((right - left) * image->pixel_bytes));
        }
    }
    return 0;
}

int64_t dcutmix_cutout(const char *src, char *dst, int64_t batch, int64_t planes, int64_t height,
                       int64_t width, int64_t sample_stride, int64_t plane_stride,
                       int64_t row_stride, int64_t pixel_bytes, const float *start, int64_t n,
                       int64_t length, int64_t threads)
{
    const cutout_job job = {{src, dst, batch, planes, height, width, sample_stride, plane_stride,
                             row_stride, pixel_bytes, NULL, 1, NULL, NULL, 0, NULL, 0},
                            start, n, length};
    return over_samples(cut_out, &job, batch, threads);
}

/* ResizeMix's paste: each image's partner area-resampled into its patch, the rest of the image
 * kept. rows (n, H, H) and cols (n, W, W) are the resampling matrices of mixing._resize_matrix
 * (zero outside the patch, a narrow band of non-zeros inside), box (4, n) holds each patch's
 * top, left, height and width; n = batch, or 1 for a shared patch. Each patch row is a sum of the
 * few partner rows in its band, then each patch pixel a sum over its band of that row: the two
 * matrix products without their zeros. */
typedef struct {
    const char *src;
    char *dst;
    int64_t batch, planes, height, width;
    const int64_t *partners; /* (batch,) */
    const void *rows, *cols;
    int64_t n;
    const int64_t *box;
} resize_job;

/* band[2 i], band[2 i + 1]: the first and one past the last non-zero of row first + i of a
 * (size, size) matrix, for i < count */
#define BANDS(matrix, size, first, count, band)                                                  \
    for (int64_t i = 0; i < (count); ++i) {                                                      \
        const int64_t row = ((first) + i) * (size);                                              \
        int64_t lo = 0, hi = (size);                                                             \
        while (lo < hi && (matrix)[row + lo] == 0) ++lo;                                         \
        while (hi > lo && (matrix)[row + hi - 1] == 0) --hi;                                     \
        (band)[2 * i] = lo, (band)[2 * i + 1] = hi;                                              \
    }

#define RESIZE_PASTE(NAME, T)                                                                    \
    static int64_t NAME(const void *arg, int64_t first, int64_t last)                           \
    {                                                                                            \
        const resize_job *job = arg;                                                             \
        const int64_t H = job->height, W = job->width, n = job->n;                               \
        T *line = malloc((size_t)W * sizeof *line);                                              \
        int64_t *band = malloc((size_t)(2 * H + 2 * W) * sizeof *band);                         \
        if (!line || !band) {                                                                    \
            free(line);                                                                          \
            free(band);                                                                          \
            return NO_MEMORY;                                                                    \
        }                                                                                        \
        int64_t status = 0, banded = -1;                                                         \
        for (int64_t b = first; b < last && !status; ++b) {                                      \
            const int64_t s = n > 1 ? b : 0;                                                     \
            const int64_t top = job->box[s], left = job->box[n + s];                             \
            const int64_t tall = job->box[2 * n + s], wide = job->box[3 * n + s];                \
            const int64_t partner = job->partners[b];                                            \
            if (partner < 0 || partner >= job->batch) status = BAD_SOURCE;                       \
            if (top < 0 || left < 0 || tall < 0 || wide < 0 || top + tall > H ||                 \
                left + wide > W)                                                                 \
                status = BAD_BOX;                                                                \
            if (status) break;                                                                   \
            const T *R = (const T *)job->rows + s * H * H, *C = (const T *)job->cols + s * W * W; \
            int64_t *col_band = band + 2 * H;                                                    \
            if (s != banded) { /* a shared patch's bands are found once */                      \
                BANDS(R, H, top, tall, band);      /* the partner rows of each patch row */      \
                BANDS(C, W, left, wide, col_band); /* the columns of each patch column */        \
                banded = s;                                                                      \
            }                                                                                    \
            const int64_t plane = H * W, sample = job->planes * plane;                           \
            for (int64_t p = 0; p < job->planes; ++p) {                                          \
                const T *own = (const T *)job->src + b * sample + p * plane;                     \
                const T *in = (const T *)job->src + partner * sample + p * plane;                \
                T *out = (T *)job->dst + b * sample + p * plane;                                 \
                memcpy(out, own, (size_t)plane * sizeof *out);                                   \
                for (int64_t i = 0; i < tall; ++i) {                                             \
                    const T *weights = R + (top + i) * H;                                        \
                    for (int64_t x = 0; x < W; ++x) line[x] = 0;                                 \
                    for (int64_t y = band[2 * i]; y < band[2 * i + 1]; ++y) {                    \
                        const T weight = weights[y];                                             \
                        const T *row = in + y * W;                                               \
                        for (int64_t x = 0; x < W; ++x) line[x] += weight * row[x];              \
                    }                                                                            \
                    T *target = out + (top + i) * W + left;                                      \
                    for (int64_t j = 0; j < wide; ++j) {                                         \
                        const T *cw = C + (left + j) * W;                                        \
                        T sum = 0;                                                               \
                        for (int64_t x = col_band[2 * j]; x < col_band[2 * j + 1]; ++x)          \
                            sum += cw[x] * line[x];                                              \
                        target[j] = sum;                                                         \
                    }                                                                            \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
        free(line);                                                                              \
        free(band);                                                                              \
        return status;                                                                           \
    }

RESIZE_PASTE(resize_paste_float, float)
RESIZE_PASTE(resize_paste_double, double)

/* Contiguous NCHW images of float (item 4) or double (item 8); matrices of the same type. */
int64_t dcutmix_resize_paste(const char *src, char *dst, int64_t batch, int64_t planes,
                             int64_t height, int64_t width, int64_t item,
                             const int64_t *partners, const void *rows, const void *cols,
                             int64_t n, const int64_t *box, int64_t threads)
{
    const resize_job job = {src, dst, batch, planes, height, width, partners, rows, cols, n, box};
    if (item != 4 && item != 8) return BAD_ITEM;
    return over_samples(item == 4 ? resize_paste_float : resize_paste_double, &job, batch, threads);
}

/* The blend modes (Mixup, its K-image expansions, DMixup): image b becomes
 * weights[b][0] * image b + sum over l >= 1 of weights[b][l] * image partners[l - 1][b], each
 * product and sum rounded on its own in that order, as mixing._apply_blend computes it; one pass
 * over the batch in blocks that stay in the cache. Every sample is `numel` elements of the same
 * layout, so NCHW and channels-last are alike here. */
typedef struct {
    const char *src;
    char *dst;
    int64_t batch, numel;
    const int64_t *partners; /* (levels - 1, batch) */
    int64_t levels;
    const void *weights; /* (n, levels), the images' type */
    int64_t n;
} blend_job;

enum { BLEND_BLOCK = 1024 };

#define BLEND(NAME, T)                                                                           \
    static int64_t NAME(const void *arg, int64_t first, int64_t last)                           \
    {                                                                                            \
        const blend_job *job = arg;                                                              \
        const T *images = (const T *)job->src;                                                   \
        for (int64_t b = first; b < last; ++b) {                                                 \
            const T *weight = (const T *)job->weights + (job->n > 1 ? b : 0) * job->levels;      \
            T *out = (T *)job->dst + b * job->numel;                                             \
            for (int64_t at = 0; at < job->numel; at += BLEND_BLOCK) {                           \
                const int64_t stop = at + BLEND_BLOCK < job->numel ? at + BLEND_BLOCK : job->numel; \
                const T *own = images + b * job->numel, w0 = weight[0];                          \
                for (int64_t i = at; i < stop; ++i) out[i] = own[i] * w0;                        \
                for (int64_t l = 1; l < job->levels; ++l) {                                      \
                    const T *partner = images + job->partners[(l - 1) * job->batch + b] * job->numel; \
                    const T w = weight[l];                                                       \
                    for (int64_t i = at; i < stop; ++i) out[i] = out[i] + partner[i] * w;        \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
        return 0;                                                                                \
    }

BLEND(blend_float, float)
BLEND(blend_double, double)

int64_t dcutmix_blend(const char *src, char *dst, int64_t batch, int64_t numel, int64_t item,
                      const int64_t *partners, int64_t levels, const void *weights, int64_t n,
                      int64_t threads)
{
    if (item != 4 && item != 8) return BAD_ITEM;
    const int64_t bad = check_partners(partners, levels, batch);
    if (bad) return bad;
    const blend_job job = {src, dst, batch, numel, partners, levels, weights, n};
    return over_samples(item == 4 ? blend_float : blend_double, &job, batch, threads);
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
