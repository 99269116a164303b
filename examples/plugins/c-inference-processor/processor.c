/* The iris model's processor in C (the same pre/post logic as the Python one in
 * examples/inference/iris/processor): `{"instances": [[sepal length, sepal width,
 * petal length, petal width], ...], "top_k": 2}` in, an f32 tensor `inputs` [rows, 4] to
 * the model; its `probabilities` [rows, classes] out, the top-k labels (model/labels.txt)
 * with their scores rounded to 6 places, as `{"predictions": [[{"label", "score"}, ...],
 * ...]}`, byte for byte what the Python processor answers.
 *
 * Built with `atelier plugin build` (wit-bindgen's C bindings in build/bindings, clang for
 * wasm32-wasi). The request is read by json.c: bounded, without recursion, and every
 * refusal is an `invalid-input` error (HTTP 400) naming the place, never a trap. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inference_processor.h"
#include "json.h"

typedef exports_atelier_plugin_processor_error_t error_t_;

/* The labels, one a line (blank lines skipped, whitespace trimmed), read once by `init`. */
static char **labels;
static size_t nlabels;

static bool fail(error_t_ *err, atelier_plugin_types_error_kind_t kind, const char *message) {
    err->kind = kind;
    inference_processor_string_dup(&err->message, message);
    return false;
}

static bool bad(error_t_ *err, const char *message) {
    return fail(err, ATELIER_PLUGIN_TYPES_ERROR_KIND_INVALID_INPUT, message);
}

static bool out_of_memory(error_t_ *err) {
    return fail(err, ATELIER_PLUGIN_TYPES_ERROR_KIND_FAILED, "out of memory");
}

static int is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static bool read_labels(const char *path, error_t_ *err) {
    char message[512];
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(message, sizeof message, "cannot read %s: %s", path, strerror(errno));
        return fail(err, ATELIER_PLUGIN_TYPES_ERROR_KIND_NOT_READY, message);
    }
    char line[4096];
    size_t cap = 0;
    while (fgets(line, sizeof line, f)) {
        size_t n = strlen(line);
        if (n == sizeof line - 1 && line[n - 1] != '\n' && !feof(f)) {
            fclose(f);
            snprintf(message, sizeof message, "cannot read %s: a line is longer than %zu bytes",
                     path, sizeof line - 2);
            return fail(err, ATELIER_PLUGIN_TYPES_ERROR_KIND_NOT_READY, message);
        }
        char *s = line;
        while (n && is_space(s[n - 1])) s[--n] = '\0';
        while (*s && is_space(*s)) s++;
        if (!*s) continue;
        if (nlabels == cap) {
            cap = cap ? cap * 2 : 16;
            char **p = realloc(labels, cap * sizeof *labels);
            if (!p) {
                fclose(f);
                return out_of_memory(err);
            }
            labels = p;
        }
        if (!(labels[nlabels] = strdup(s))) {
            fclose(f);
            return out_of_memory(err);
        }
        nlabels++;
    }
    fclose(f);
    return true;
}

bool exports_atelier_plugin_processor_init(exports_atelier_plugin_processor_model_info_t *info,
                                           error_t_ *err) {
    char path[1024];
    snprintf(path, sizeof path, "%.*s/labels.txt", (int)info->model_path.len,
             (const char *)info->model_path.ptr);
    exports_atelier_plugin_processor_model_info_free(info);
    return read_labels(path, err);
}

bool exports_atelier_plugin_processor_preprocess(exports_atelier_plugin_processor_request_t *req,
                                                 exports_atelier_plugin_processor_prepared_t *ret,
                                                 error_t_ *err) {
    bool ok = false;
    if (req->body.tag != ATELIER_PLUGIN_INFERENCE_TYPES_BODY_JSON) {
        fail(err, ATELIER_PLUGIN_TYPES_ERROR_KIND_UNSUPPORTED, "send application/json");
        goto done;
    }
    const char *text = (const char *)req->body.val.json.ptr;
    size_t len = req->body.val.json.len;
    static const char *const keys[] = {"instances", "top_k"};
    json_span found[2];
    json_error jerr;
    if (json_scan(text, len, keys, 2, found, &jerr)) {
        bad(err, jerr.message);
        goto done;
    }
    if (!json_is_object(text, len) || !found[0].present) {
        bad(err, "expected {\"instances\": [[4 numbers], ...]}");
        goto done;
    }
    float *rows_data;
    size_t rows;
    int shape_error;
    int r = json_f32_rows(text, found[0], 4, "/instances", &rows_data, &rows, &shape_error, &jerr);
    if (r == -2) {
        out_of_memory(err);
        goto done;
    }
    if (r) {
        char message[400];
        if (shape_error) {
            snprintf(message, sizeof message, "expected {\"instances\": [[4 numbers], ...]}: %s",
                     jerr.message);
            bad(err, message);
        } else {
            bad(err, jerr.message);
        }
        goto done;
    }
    long long top_k = 1;
    if (found[1].present && json_integer(text, found[1], 1, 3, &top_k)) {
        free(rows_data);
        bad(err, "top_k must be 1, 2 or 3");
        goto done;
    }

    /* The tensor: name, dtype, shape, data (f32 little-endian: wasm's own byte order). */
    atelier_plugin_inference_types_tensor_t *t = calloc(1, sizeof *t);
    uint64_t *shape = malloc(2 * sizeof *shape);
    uint8_t *state = malloc(1);
    if (!t || !shape || !state) {
        free(t);
        free(shape);
        free(state);
        free(rows_data);
        out_of_memory(err);
        goto done;
    }
    inference_processor_string_dup(&t->name, "inputs");
    t->dtype = ATELIER_PLUGIN_TYPES_DTYPE_F32;
    shape[0] = rows;
    shape[1] = 4;
    t->shape = (inference_processor_list_u64_t){shape, 2};
    t->data = (inference_processor_list_u8_t){(uint8_t *)rows_data, rows * 4 * sizeof(float)};
    ret->input.tag = ATELIER_PLUGIN_INFERENCE_TYPES_MODEL_DATA_TENSORS;
    ret->input.val.tensors = (atelier_plugin_inference_types_list_tensor_t){t, 1};
    state[0] = (uint8_t)('0' + top_k);
    ret->state.is_some = true;
    ret->state.val = (inference_processor_list_u8_t){state, 1};
    ok = true;
done:
    exports_atelier_plugin_processor_request_free(req);
    return ok;
}

/* Element `i` of the probabilities, as f64. */
static double element(const atelier_plugin_inference_types_tensor_t *t, size_t i) {
    if (t->dtype == ATELIER_PLUGIN_TYPES_DTYPE_F32) {
        float v;
        memcpy(&v, t->data.ptr + i * 4, 4);
        return v;
    }
    double v;
    memcpy(&v, t->data.ptr + i * 8, 8);
    return v;
}

/* Whether element a ranks before element b (larger first, NaN last, ties by index). */
static int before(double va, size_t a, double vb, size_t b) {
    if (va != va) return vb != vb && a < b;
    if (vb != vb) return 1;
    return va > vb || (va == vb && a < b);
}

bool exports_atelier_plugin_processor_postprocess(inference_processor_list_u8_t *maybe_state,
                                                  exports_atelier_plugin_processor_model_data_t *output,
                                                  exports_atelier_plugin_processor_response_t *ret,
                                                  error_t_ *err) {
    bool ok = false;
    json_buf b = {0};
    long long top_k = 1;
    if (maybe_state) {
        if (maybe_state->len != 1 || maybe_state->ptr[0] < '1' || maybe_state->ptr[0] > '3') {
            fail(err, ATELIER_PLUGIN_TYPES_ERROR_KIND_FAILED, "the state is not a top_k");
            goto done;
        }
        top_k = maybe_state->ptr[0] - '0';
    }
    if (output->tag != ATELIER_PLUGIN_INFERENCE_TYPES_MODEL_DATA_TENSORS) {
        bad(err, "expected tensors from the model, got JSON");
        goto done;
    }
    const atelier_plugin_inference_types_tensor_t *probs = NULL;
    for (size_t i = 0; i < output->val.tensors.len; i++) {
        const atelier_plugin_inference_types_tensor_t *t = &output->val.tensors.ptr[i];
        if (t->name.len == 13 && memcmp(t->name.ptr, "probabilities", 13) == 0) {
            probs = t;
            break;
        }
    }
    if (!probs) {
        fail(err, ATELIER_PLUGIN_TYPES_ERROR_KIND_FAILED, "the model gave no probabilities");
        goto done;
    }
    size_t width = probs->dtype == ATELIER_PLUGIN_TYPES_DTYPE_F32   ? 4
                   : probs->dtype == ATELIER_PLUGIN_TYPES_DTYPE_F64 ? 8
                                                                     : 0;
    if (!width) {
        fail(err, ATELIER_PLUGIN_TYPES_ERROR_KIND_FAILED,
             "the model's probabilities are not f32 or f64");
        goto done;
    }
    uint64_t rows, classes;
    if (probs->shape.len == 1) {
        rows = 1;
        classes = probs->shape.ptr[0];
    } else if (probs->shape.len == 2) {
        rows = probs->shape.ptr[0];
        classes = probs->shape.ptr[1];
    } else {
        fail(err, ATELIER_PLUGIN_TYPES_ERROR_KIND_FAILED,
             "the model's probabilities are not of shape [rows, classes]");
        goto done;
    }
    if (classes && rows > probs->data.len / width / classes) {
        fail(err, ATELIER_PLUGIN_TYPES_ERROR_KIND_FAILED,
             "the model's probabilities hold fewer elements than their shape");
        goto done;
    }
    if (rows * classes * width != probs->data.len) {
        fail(err, ATELIER_PLUGIN_TYPES_ERROR_KIND_FAILED,
             "the model's probabilities do not hold their shape's elements");
        goto done;
    }
    size_t k = (size_t)top_k < classes ? (size_t)top_k : (size_t)classes;

    /* json.dumps({"predictions": [[{"label": ..., "score": round(score, 6)}, ...], ...]}) */
    json_puts(&b, "{\"predictions\": [");
    for (uint64_t r = 0; r < rows; r++) {
        if (r) json_puts(&b, ", ");
        json_puts(&b, "[");
        size_t picked[3];
        for (size_t n = 0; n < k; n++) {
            size_t best = (size_t)-1;
            double vbest = 0;
            for (size_t c = 0; c < classes; c++) {
                int taken = 0;
                for (size_t m = 0; m < n; m++) taken |= picked[m] == c;
                if (taken) continue;
                double v = element(probs, r * classes + c);
                if (best == (size_t)-1 || before(v, c, vbest, best)) {
                    best = c;
                    vbest = v;
                }
            }
            picked[n] = best;
            if (n) json_puts(&b, ", ");
            json_puts(&b, "{\"label\": ");
            if (best < nlabels) {
                json_put_string(&b, labels[best], strlen(labels[best]));
            } else {
                char index[24];
                snprintf(index, sizeof index, "\"%zu\"", best);
                json_puts(&b, index);
            }
            json_puts(&b, ", \"score\": ");
            json_put_round6(&b, vbest);
            json_puts(&b, "}");
        }
        json_puts(&b, "]");
    }
    json_puts(&b, "]}");
    if (b.failed) {
        out_of_memory(err);
        goto done;
    }
    ret->status = 200;
    inference_processor_string_dup(&ret->content_type, "application/json");
    ret->headers = (inference_processor_list_tuple2_string_string_t){NULL, 0};
    ret->body = (inference_processor_list_u8_t){(uint8_t *)b.data, b.len};
    b.data = NULL;
    ok = true;
done:
    free(b.data);
    if (maybe_state) inference_processor_list_u8_free(maybe_state);
    exports_atelier_plugin_processor_model_data_free(output);
    return ok;
}
