/* A small JSON reader and writer for plugins: bounded and non-recursive.
 *
 * json_scan() checks a whole document (RFC 8259: nesting at most JSON_MAX_DEPTH deep,
 * numbers of at most JSON_MAX_NUMBER characters) in one pass without recursion, and finds
 * the values of the top-level object's keys that the caller names (the last one wins for a
 * repeated key, as most parsers do). The readers then convert those values. Every error
 * names the place: a byte offset for malformed text, a JSON pointer ("/instances/1/2") for
 * a well-formed value of the wrong kind. */
#ifndef ATELIER_JSON_H
#define ATELIER_JSON_H

#include <stddef.h>

#define JSON_MAX_DEPTH 64
#define JSON_MAX_NUMBER 256

typedef struct {
    char message[256];
} json_error;

/* Where a value lies in the text: [start, end). */
typedef struct {
    size_t start, end;
    int present;
} json_span;

/* Checks `text` and, when it is an object, fills found[i] for keys[i] (found[i].present is
 * 0 for a missing key). Returns 0, or -1 with `err` set. */
int json_scan(const char *text, size_t len, const char *const *keys, size_t nkeys,
              json_span *found, json_error *err);

/* Whether the document (checked by json_scan) is an object. */
int json_is_object(const char *text, size_t len);

/* The value at `span` (of a checked document) as rows of `columns` numbers, converted to
 * f32: `[[1, 2.5, 3, 4], ...]`. `*out` is malloc'd (the caller frees it), `*rows` its
 * rows. `pointer` names the value in errors ("/instances"). A number outside f32's range is
 * refused. Returns 0, -1 with `err` set (`*shape_error` 1 when the value is not `columns`
 * numbers a row, 0 for other errors), or -2 when out of memory. */
int json_f32_rows(const char *text, json_span span, size_t columns, const char *pointer,
                  float **out, size_t *rows, int *shape_error, json_error *err);

/* The value at `span` as an integer (no fraction, no exponent) within [min, max]. Returns
 * 0, or -1 when it is something else or out of range. */
int json_integer(const char *text, json_span span, long long min, long long max,
                 long long *out);

/* A growing output buffer; `failed` is set when memory ran out (later appends do
 * nothing). */
typedef struct {
    char *data;
    size_t len, cap;
    int failed;
} json_buf;

void json_put(json_buf *b, const char *s, size_t n);
void json_puts(json_buf *b, const char *s);
/* A JSON string literal of the UTF-8 text `s`, non-ASCII escaped as \uXXXX (Python's
 * json.dumps with ensure_ascii). Invalid UTF-8 bytes become U+FFFD. */
void json_put_string(json_buf *b, const char *s, size_t n);
/* `x` as Python's repr(float) writes it ("0.5", "1.0", "1e-05", "NaN", "Infinity"). */
void json_put_double(json_buf *b, double x);
/* round(x, 6) as Python computes it (correctly rounded, ties to even). */
double json_round6(double x);
/* json_put_double(b, json_round6(x)), fast (no printf or strtod) for |x| < 1e9. */
void json_put_round6(json_buf *b, double x);

#endif
