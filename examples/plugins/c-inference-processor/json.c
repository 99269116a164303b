/* See json.h. */
#include "json.h"

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fail(json_error *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

static size_t skip_ws(const char *s, size_t i, size_t len) {
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
    return i;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static long hex4(const char *s, size_t i, size_t len) {
    if (len - i < 4) return -1;
    long v = 0;
    for (size_t k = 0; k < 4; k++) {
        int h = hex_value(s[i + k]);
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    return v;
}

/* The length of the number at s[i] (JSON grammar), 0 when there is none. */
static size_t number_len(const char *s, size_t i, size_t len) {
    size_t j = i;
    if (j < len && s[j] == '-') j++;
    if (j >= len || !is_digit(s[j])) return 0;
    if (s[j] == '0') {
        j++;
    } else {
        while (j < len && is_digit(s[j])) j++;
    }
    if (j < len && s[j] == '.') {
        j++;
        if (j >= len || !is_digit(s[j])) return 0;
        while (j < len && is_digit(s[j])) j++;
    }
    if (j < len && (s[j] == 'e' || s[j] == 'E')) {
        j++;
        if (j < len && (s[j] == '+' || s[j] == '-')) j++;
        if (j >= len || !is_digit(s[j])) return 0;
        while (j < len && is_digit(s[j])) j++;
    }
    return j - i;
}

static void put_utf8(char *buf, size_t cap, size_t *n, unsigned long cp) {
    char tmp[4];
    size_t k;
    if (cp < 0x80) {
        tmp[0] = (char)cp;
        k = 1;
    } else if (cp < 0x800) {
        tmp[0] = (char)(0xC0 | (cp >> 6));
        tmp[1] = (char)(0x80 | (cp & 0x3F));
        k = 2;
    } else if (cp < 0x10000) {
        tmp[0] = (char)(0xE0 | (cp >> 12));
        tmp[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        tmp[2] = (char)(0x80 | (cp & 0x3F));
        k = 3;
    } else {
        tmp[0] = (char)(0xF0 | (cp >> 18));
        tmp[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        tmp[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        tmp[3] = (char)(0x80 | (cp & 0x3F));
        k = 4;
    }
    for (size_t m = 0; m < k; m++) {
        if (*n < cap) buf[*n] = tmp[m];
        (*n)++;
    }
}

/* Checks the string starting at the quote s[*i]; leaves *i past the closing quote. When
 * `key` is not NULL, decodes it there (up to `cap` bytes; *key_len is the full length). */
static int scan_string(const char *s, size_t *i, size_t len, char *key, size_t cap,
                       size_t *key_len, json_error *err) {
    size_t start = *i, j = *i + 1, n = 0;
    while (j < len) {
        unsigned char c = (unsigned char)s[j];
        if (c == '"') {
            *i = j + 1;
            if (key_len) *key_len = n;
            return 0;
        }
        if (c < 0x20) {
            fail(err, "the JSON is malformed: a control character in the string at byte %zu", j);
            return -1;
        }
        if (c != '\\') {
            if (key && n < cap) key[n] = (char)c;
            n++;
            j++;
            continue;
        }
        if (j + 1 >= len) break;
        char e = s[j + 1];
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e != '\0' && simple) {
            static const char decoded[] = "\"\\/\b\f\n\r\t";
            if (key && n < cap) key[n] = decoded[simple - "\"\\/bfnrt"];
            n++;
            j += 2;
            continue;
        }
        if (e != 'u') {
            fail(err, "the JSON is malformed: the escape \\%c at byte %zu", e, j);
            return -1;
        }
        long cp = hex4(s, j + 2, len);
        if (cp < 0) {
            fail(err, "the JSON is malformed: \\u without 4 hex digits at byte %zu", j);
            return -1;
        }
        j += 6;
        if (cp >= 0xDC00 && cp <= 0xDFFF) {
            fail(err, "the JSON is malformed: a lone low surrogate at byte %zu", j - 6);
            return -1;
        }
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            long lo = (j + 1 < len && s[j] == '\\' && s[j + 1] == 'u') ? hex4(s, j + 2, len) : -1;
            if (lo < 0xDC00 || lo > 0xDFFF) {
                fail(err, "the JSON is malformed: a lone high surrogate at byte %zu", j - 6);
                return -1;
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            j += 6;
        }
        if (key) {
            put_utf8(key, cap, &n, (unsigned long)cp);
        } else {
            n++;
        }
    }
    fail(err, "the JSON is malformed: the string at byte %zu does not end", start);
    return -1;
}

int json_scan(const char *s, size_t len, const char *const *keys, size_t nkeys,
              json_span *found, json_error *err) {
    /* The open containers: '[' or '{'. */
    char stack[JSON_MAX_DEPTH];
    size_t depth = 0, i = 0, value_start = 0;
    long pending = -1; /* the key whose value at depth 1 is being read */
    char key[64];
    for (size_t k = 0; k < nkeys; k++) found[k].present = 0;

    i = skip_ws(s, i, len);
    for (;;) {
        /* A value at s[i]. */
        if (i >= len) {
            fail(err, "the JSON is malformed: it ends where a value should be (byte %zu)", i);
            return -1;
        }
        char c = s[i];
        if (c == '{' || c == '[') {
            if (depth == JSON_MAX_DEPTH) {
                fail(err, "the JSON nests deeper than %d levels (byte %zu)", JSON_MAX_DEPTH, i);
                return -1;
            }
            stack[depth++] = c;
            i = skip_ws(s, i + 1, len);
            if (i < len && s[i] == (c == '{' ? '}' : ']')) {
                depth--;
                i++;
                goto after_value;
            }
            if (c == '[') continue;
            goto object_key;
        } else if (c == '"') {
            if (scan_string(s, &i, len, NULL, 0, NULL, err)) return -1;
        } else if (c == '-' || is_digit(c)) {
            size_t n = number_len(s, i, len);
            if (n == 0) {
                fail(err, "the JSON is malformed: a bad number at byte %zu", i);
                return -1;
            }
            if (n > JSON_MAX_NUMBER) {
                fail(err, "a number of more than %d characters at byte %zu", JSON_MAX_NUMBER, i);
                return -1;
            }
            i += n;
        } else if (len - i >= 4 && memcmp(s + i, "true", 4) == 0) {
            i += 4;
        } else if (len - i >= 5 && memcmp(s + i, "false", 5) == 0) {
            i += 5;
        } else if (len - i >= 4 && memcmp(s + i, "null", 4) == 0) {
            i += 4;
        } else {
            fail(err, "the JSON is malformed: unexpected '%c' at byte %zu", c, i);
            return -1;
        }

    after_value:
        if (depth == 1 && pending >= 0 && stack[0] == '{') {
            found[pending].start = value_start;
            found[pending].end = i;
            found[pending].present = 1;
            pending = -1;
        }
        i = skip_ws(s, i, len);
        if (depth == 0) {
            if (i != len) {
                fail(err, "the JSON is malformed: trailing characters at byte %zu", i);
                return -1;
            }
            return 0;
        }
        if (i >= len) {
            fail(err, "the JSON is malformed: it ends inside an %s (byte %zu)",
                 stack[depth - 1] == '{' ? "object" : "array", i);
            return -1;
        }
        if (s[i] == ',') {
            i = skip_ws(s, i + 1, len);
            if (stack[depth - 1] == '[') continue;
            goto object_key;
        }
        if (s[i] == (stack[depth - 1] == '{' ? '}' : ']')) {
            depth--;
            i++;
            goto after_value;
        }
        fail(err, "the JSON is malformed: expected ',' or '%c' at byte %zu",
             stack[depth - 1] == '{' ? '}' : ']', i);
        return -1;

    object_key:
        if (i >= len || s[i] != '"') {
            fail(err, "the JSON is malformed: expected a key at byte %zu", i);
            return -1;
        }
        {
            size_t key_len = 0;
            int top = depth == 1;
            if (scan_string(s, &i, len, top ? key : NULL, sizeof key, &key_len, err)) return -1;
            if (top) {
                for (size_t k = 0; k < nkeys; k++) {
                    if (key_len == strlen(keys[k]) && key_len <= sizeof key &&
                        memcmp(key, keys[k], key_len) == 0) {
                        pending = (long)k;
                    }
                }
            }
        }
        i = skip_ws(s, i, len);
        if (i >= len || s[i] != ':') {
            fail(err, "the JSON is malformed: expected ':' at byte %zu", i);
            return -1;
        }
        i = skip_ws(s, i + 1, len);
        value_start = i;
    }
}

int json_is_object(const char *s, size_t len) {
    size_t i = skip_ws(s, 0, len);
    return i < len && s[i] == '{';
}

/* A short description of the value at s[i] for an error: the token (cut), or "an array". */
static void describe(const char *s, size_t i, size_t end, char *out, size_t cap) {
    if (s[i] == '[') {
        snprintf(out, cap, "an array");
    } else if (s[i] == '{') {
        snprintf(out, cap, "an object");
    } else {
        size_t n = 0;
        if (s[i] == '"') {
            size_t j = i + 1;
            while (j < end && s[j] != '"') j += s[j] == '\\' ? 2 : 1;
            n = (j < end ? j + 1 : end) - i;
        } else {
            while (i + n < end && s[i + n] != ',' && s[i + n] != ']' && s[i + n] != ' ' &&
                   s[i + n] != '\n' && s[i + n] != '\t' && s[i + n] != '\r')
                n++;
        }
        if (n > 40) snprintf(out, cap, "%.40s...", s + i);
        else snprintf(out, cap, "%.*s", (int)n, s + i);
    }
}

/* Powers of ten that doubles hold exactly. */
static const double exact_pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* The JSON number `num` (checked, NUL-terminated) as the nearest double. Numbers of at
 * most 15 significant digits with small exponents (all of a usual request) take Clinger's
 * fast path: the digits and the power of ten are exact doubles, so one division or
 * multiplication rounds correctly. The rest go to strtod (correct, but slow in wasi-libc). */
static double parse_number(const char *num, size_t len) {
    const char *p = num, *end = num + len;
    int negative = *p == '-';
    if (negative) p++;
    uint64_t m = 0;
    int scale = 0;
    for (; p < end && is_digit(*p); p++) {
        if (m >= 100000000000000ULL) return strtod(num, NULL);
        m = m * 10 + (uint64_t)(*p - '0');
    }
    if (p < end && *p == '.') {
        for (p++; p < end && is_digit(*p); p++) {
            if (m >= 100000000000000ULL) return strtod(num, NULL);
            m = m * 10 + (uint64_t)(*p - '0');
            scale--;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        int sign = 1, e = 0;
        if (*p == '+' || *p == '-') sign = *p++ == '-' ? -1 : 1;
        for (; p < end && is_digit(*p); p++) {
            if (e > 1000) return strtod(num, NULL);
            e = e * 10 + (*p - '0');
        }
        scale += sign * e;
    }
    if (scale < -22 || scale > 22) return strtod(num, NULL);
    double v = (double)m;
    v = scale < 0 ? v / exact_pow10[-scale] : v * exact_pow10[scale];
    return negative ? -v : v;
}

int json_f32_rows(const char *s, json_span span, size_t columns, const char *pointer,
                  float **out, size_t *rows, int *shape_error, json_error *err) {
    size_t i = span.start, end = span.end, n = 0, cap = 0;
    float *data = NULL;
    char what[64];
    *out = NULL;
    *rows = 0;
    *shape_error = 1;
    if (s[i] != '[') {
        describe(s, i, end, what, sizeof what);
        fail(err, "%s is %s, not an array of rows", pointer, what);
        return -1;
    }
    i = skip_ws(s, i + 1, end);
    if (s[i] == ']') {
        fail(err, "%s has no rows", pointer);
        return -1;
    }
    for (size_t row = 0;; row++) {
        if (s[i] != '[') {
            describe(s, i, end, what, sizeof what);
            fail(err, "%s/%zu is %s, not a row of %zu numbers", pointer, row, what, columns);
            goto bad;
        }
        i = skip_ws(s, i + 1, end);
        size_t col = 0;
        if (s[i] != ']') {
            for (;; col++) {
                if (col == columns) {
                    fail(err, "%s/%zu has more than %zu elements", pointer, row, columns);
                    goto bad;
                }
                size_t len = s[i] == '-' || is_digit(s[i]) ? number_len(s, i, end) : 0;
                if (len == 0) {
                    describe(s, i, end, what, sizeof what);
                    fail(err, "%s/%zu/%zu is %s, not a number", pointer, row, col, what);
                    *shape_error = 0;
                    goto bad;
                }
                char num[JSON_MAX_NUMBER + 1];
                memcpy(num, s + i, len);
                num[len] = '\0';
                double v = parse_number(num, len);
                if (isinf(v) || isinf((float)v)) {
                    fail(err, "%s/%zu/%zu is %.40s%s, outside the range of f32", pointer, row, col,
                         num, len > 40 ? "..." : "");
                    *shape_error = 0;
                    goto bad;
                }
                if (n == cap) {
                    size_t grown = cap ? cap * 2 : 64;
                    float *p = realloc(data, grown * sizeof *data);
                    if (!p) {
                        free(data);
                        return -2;
                    }
                    data = p;
                    cap = grown;
                }
                data[n++] = (float)v;
                i = skip_ws(s, i + len, end);
                if (s[i] == ']') break;
                i = skip_ws(s, i + 1, end); /* the ',' */
            }
            col++;
        }
        if (col != columns) {
            fail(err, "%s/%zu has %zu elements, not %zu", pointer, row, col, columns);
            goto bad;
        }
        i = skip_ws(s, i + 1, end); /* past the row's ']' */
        if (s[i] == ']') {
            *out = data;
            *rows = row + 1;
            return 0;
        }
        i = skip_ws(s, i + 1, end); /* the ',' */
    }
bad:
    free(data);
    return -1;
}

int json_integer(const char *s, json_span span, long long min, long long max, long long *out) {
    size_t i = span.start, end = span.end;
    int negative = 0;
    if (i < end && s[i] == '-') {
        negative = 1;
        i++;
    }
    if (i >= end || !is_digit(s[i])) return -1;
    long long v = 0;
    for (; i < end && is_digit(s[i]); i++) {
        if (v > (LLONG_MAX - 9) / 10) return -1; /* far outside any range asked for */
        v = v * 10 + (s[i] - '0');
    }
    if (i != end) return -1; /* a fraction or an exponent: not an integer */
    if (negative) v = -v;
    if (v < min || v > max) return -1;
    *out = v;
    return 0;
}

void json_put(json_buf *b, const char *s, size_t n) {
    if (b->failed) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

void json_puts(json_buf *b, const char *s) { json_put(b, s, strlen(s)); }

static void put_u16_escape(json_buf *b, unsigned long u) {
    char esc[8];
    snprintf(esc, sizeof esc, "\\u%04lx", u);
    json_put(b, esc, 6);
}

void json_put_string(json_buf *b, const char *s, size_t n) {
    json_put(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x80) {
            switch (c) {
            case '"': json_put(b, "\\\"", 2); break;
            case '\\': json_put(b, "\\\\", 2); break;
            case '\n': json_put(b, "\\n", 2); break;
            case '\r': json_put(b, "\\r", 2); break;
            case '\t': json_put(b, "\\t", 2); break;
            case '\b': json_put(b, "\\b", 2); break;
            case '\f': json_put(b, "\\f", 2); break;
            default:
                if (c < 0x20) put_u16_escape(b, c);
                else json_put(b, (const char *)&s[i], 1);
            }
            i++;
            continue;
        }
        /* A UTF-8 sequence: its code point, escaped (a surrogate pair above U+FFFF). */
        unsigned long cp = 0xFFFD;
        size_t k = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        if (k > 1 && i + k <= n) {
            unsigned long v = c & (0x7F >> k);
            size_t m = 1;
            for (; m < k && ((unsigned char)s[i + m] & 0xC0) == 0x80; m++)
                v = (v << 6) | ((unsigned char)s[i + m] & 0x3F);
            static const unsigned long least[5] = {0, 0, 0x80, 0x800, 0x10000};
            if (m == k && v >= least[k] && v <= 0x10FFFF && !(v >= 0xD800 && v <= 0xDFFF)) cp = v;
            else k = 1;
        } else {
            k = 1;
        }
        if (cp >= 0x10000) {
            put_u16_escape(b, 0xD800 + ((cp - 0x10000) >> 10));
            put_u16_escape(b, 0xDC00 + ((cp - 0x10000) & 0x3FF));
        } else {
            put_u16_escape(b, cp);
        }
        i += k;
    }
    json_put(b, "\"", 1);
}

double json_round6(double x) {
    if (!isfinite(x) || fabs(x) >= 1e15) return x; /* no digits after the point to round */
    char buf[64];
    snprintf(buf, sizeof buf, "%.6f", x); /* correctly rounded, ties to even */
    return strtod(buf, NULL);
}

/* The digits of n (at most 20), returns their count. */
static size_t put_digits(char *out, uint64_t n) {
    char tmp[24];
    size_t k = 0;
    do {
        tmp[k++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    for (size_t i = 0; i < k; i++) out[i] = tmp[k - 1 - i];
    return k;
}

/* repr(round(x, 6)) for a finite |x| < 1e9, without printf or strtod (slow in wasi-libc):
 * round(x, 6) is n / 10^6 for the integer n nearest to x·10^6 (ties to even, as Python),
 * and its repr is n's digits around the point with trailing zeros dropped, since no
 * shorter decimal reads back as the same double at this magnitude. */
void json_put_round6(json_buf *b, double x) {
    if (!(fabs(x) < 1e9)) {
        json_put_double(b, json_round6(x));
        return;
    }
    int negative = signbit(x) != 0;
    double ax = fabs(x), y = ax * 1e6, n = nearbyint(y);
    /* y is within 2^-22 of the exact product: only near a tie can n be off by one. */
    if (fabs(fabs(y - n) - 0.5) < 1e-3) {
        double above = fma(ax, 1e6, -(n + 0.5)), below = fma(ax, 1e6, -(n - 0.5));
        if (above > 0 || (above == 0 && fmod(n, 2) != 0)) n += 1;
        else if (below < 0 || (below == 0 && fmod(n, 2) != 0)) n -= 1;
    }
    uint64_t v = (uint64_t)n, whole = v / 1000000, frac = v % 1000000;
    char out[48];
    size_t o = 0;
    if (negative) out[o++] = '-';
    if (whole || frac >= 100) {
        /* Fixed notation: "12.5", "0.000123", "1.0". */
        o += put_digits(out + o, whole);
        out[o++] = '.';
        if (!frac) {
            out[o++] = '0';
        } else {
            char six[6];
            for (int i = 5; i >= 0; i--, frac /= 10) six[i] = (char)('0' + frac % 10);
            size_t keep = 6;
            while (six[keep - 1] == '0') keep--;
            memcpy(out + o, six, keep);
            o += keep;
        }
    } else if (!frac) {
        memcpy(out + o, "0.0", 3);
        o += 3;
    } else {
        /* Below 1e-4: Python's "1.1e-05". */
        char d[8];
        size_t nd = put_digits(d, frac);
        int exp10 = (int)nd - 7;
        while (nd > 1 && d[nd - 1] == '0') nd--;
        out[o++] = d[0];
        if (nd > 1) {
            out[o++] = '.';
            memcpy(out + o, d + 1, nd - 1);
            o += nd - 1;
        }
        out[o++] = 'e';
        out[o++] = '-';
        out[o++] = (char)('0' + (-exp10) / 10);
        out[o++] = (char)('0' + (-exp10) % 10);
    }
    json_put(b, out, o);
}

void json_put_double(json_buf *b, double x) {
    if (isnan(x)) {
        json_puts(b, "NaN");
        return;
    }
    if (isinf(x)) {
        json_puts(b, x > 0 ? "Infinity" : "-Infinity");
        return;
    }
    /* The shortest digits that read back as x (Python's repr). */
    char sci[40];
    for (int p = 0; p < 17; p++) {
        snprintf(sci, sizeof sci, "%.*e", p, x);
        if (strtod(sci, NULL) == x) break;
    }
    /* sci is "-d.ddde+XX": its digits and decimal exponent. */
    char digits[24];
    size_t nd = 0;
    const char *q = sci;
    int negative = *q == '-';
    if (negative) q++;
    for (; *q && *q != 'e'; q++)
        if (is_digit(*q)) digits[nd++] = *q;
    int exp10 = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    char out[64];
    size_t o = 0;
    if (negative) out[o++] = '-';
    if (exp10 < -4 || exp10 >= 16) {
        out[o++] = digits[0];
        if (nd > 1) {
            out[o++] = '.';
            for (size_t k = 1; k < nd; k++) out[o++] = digits[k];
        }
        o += (size_t)snprintf(out + o, sizeof out - o, "e%c%02d", exp10 < 0 ? '-' : '+',
                              exp10 < 0 ? -exp10 : exp10);
    } else if (exp10 < 0) {
        out[o++] = '0';
        out[o++] = '.';
        for (int k = -1; k > exp10; k--) out[o++] = '0';
        for (size_t k = 0; k < nd; k++) out[o++] = digits[k];
    } else {
        for (int k = 0; k <= exp10; k++) out[o++] = (size_t)k < nd ? digits[k] : '0';
        out[o++] = '.';
        if ((size_t)exp10 + 1 < nd) {
            for (size_t k = (size_t)exp10 + 1; k < nd; k++) out[o++] = digits[k];
        } else {
            out[o++] = '0';
        }
    }
    json_put(b, out, o);
}
