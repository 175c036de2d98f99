/*
 * processors._cleaning: the two per-fix steps of cleaning that cost most in Python for what
 * they do (see processors/cleaning.py).
 *
 * epoch_ms(dt) is round(dt.timestamp() * 1000) for an aware datetime, the same int: the
 * microseconds since the epoch are exact integers here as in datetime's own arithmetic, and
 * the float steps after them are Python's (a correctly rounded division by 1e6, a product,
 * then rounding half to even). It skips the timedelta objects that timestamp() builds and
 * pydantic's tzinfo, whose utcoffset() is slow to reach from timestamp() (pydantic #7897).
 * A naive datetime (local time) is left to Python's own timestamp().
 *
 * recent_match(flat, h, t_ms) scans the dedupe memory, an array('q') of (id hash, ts ms)
 * pairs, oldest first, where Python spent most of seen_before() slicing and searching.
 *
 * fix_hash(fix_id) is int.from_bytes(blake2b(fix_id.encode(), digest_size=6).digest(), "big"),
 * the same int: BLAKE2b as RFC 7693 defines it, without the hash object hashlib builds for
 * every fix (0.5 us of the worker's ~35 per fix).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Days from 1970-01-01 to the proleptic Gregorian date (H. Hinnant's days_from_civil). */
static long long days_from_civil(long long y, unsigned m, unsigned d) {
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long long)doe - 719468;
}

static PyObject *epoch_ms(PyObject *Py_UNUSED(module), PyObject *dt) {
    if (!PyDateTime_Check(dt)) {
        PyErr_SetString(PyExc_TypeError, "epoch_ms() needs a datetime");
        return NULL;
    }
    PyObject *tz = PyDateTime_DATE_GET_TZINFO(dt);
    long long offset_us = 0;
    if (tz == Py_None) {
        PyObject *seconds = PyObject_CallMethod(dt, "timestamp", NULL);
        if (seconds == NULL) {
            return NULL;
        }
        double value = PyFloat_AsDouble(seconds);
        Py_DECREF(seconds);
        if (value == -1.0 && PyErr_Occurred()) {
            return NULL;
        }
        return PyLong_FromDouble(nearbyint(value * 1000.0));
    }
    if (tz != PyDateTime_TimeZone_UTC) {
        PyObject *offset = PyObject_CallMethod(tz, "utcoffset", "O", dt);
        if (offset == NULL) {
            return NULL;
        }
        if (!PyDelta_Check(offset)) {
            Py_DECREF(offset);
            PyErr_SetString(PyExc_TypeError, "utcoffset() did not return a timedelta");
            return NULL;
        }
        offset_us = ((long long)PyDateTime_DELTA_GET_DAYS(offset) * 86400 +
                     PyDateTime_DELTA_GET_SECONDS(offset)) * 1000000LL +
                    PyDateTime_DELTA_GET_MICROSECONDS(offset);
        Py_DECREF(offset);
    }
    long long days = days_from_civil(PyDateTime_GET_YEAR(dt), PyDateTime_GET_MONTH(dt),
                                     PyDateTime_GET_DAY(dt));
    long long seconds = days * 86400 + PyDateTime_DATE_GET_HOUR(dt) * 3600 +
                        PyDateTime_DATE_GET_MINUTE(dt) * 60 + PyDateTime_DATE_GET_SECOND(dt);
    long long us = seconds * 1000000LL + PyDateTime_DATE_GET_MICROSECOND(dt) - offset_us;
    /* timestamp(): us / 10**6, correctly rounded (us is exact in a double: |us| < 2**53);
       then * 1000 and round(), half to even (nearbyint in the default rounding mode). */
    return PyLong_FromDouble(nearbyint(((double)us / 1e6) * 1000.0));
}

static PyObject *recent_match(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "recent_match(flat, h, t_ms) takes 3 arguments");
        return NULL;
    }
    long long h = PyLong_AsLongLong(args[1]);
    if (h == -1 && PyErr_Occurred()) {
        return NULL;
    }
    long long t_ms = PyLong_AsLongLong(args[2]);
    if (t_ms == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) {
        return NULL;
    }
    if (view.itemsize != 8 || view.format == NULL || strcmp(view.format, "q") != 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_TypeError, "recent_match() needs an array('q')");
        return NULL;
    }
    const long long *pairs = view.buf;
    Py_ssize_t n = view.len / 16;
    long found = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (pairs[2 * i] == h) {
            found = 1;
            break;
        }
        if (pairs[2 * i + 1] == t_ms) {
            found = 2;
            break;
        }
    }
    PyBuffer_Release(&view);
    return PyLong_FromLong(found);
}

/* BLAKE2b (RFC 7693), unkeyed, for digests of 1 to 8 bytes: only h[0] is needed. */
static const uint64_t BLAKE2B_IV[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

static const uint8_t BLAKE2B_SIGMA[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
};

static uint64_t rotr64(uint64_t x, int n) { return (x >> n) | (x << (64 - n)); }

#define BLAKE2B_G(a, b, c, d, x, y)      \
    do {                                 \
        v[a] = v[a] + v[b] + (x);        \
        v[d] = rotr64(v[d] ^ v[a], 32);  \
        v[c] = v[c] + v[d];              \
        v[b] = rotr64(v[b] ^ v[c], 24);  \
        v[a] = v[a] + v[b] + (y);        \
        v[d] = rotr64(v[d] ^ v[a], 16);  \
        v[c] = v[c] + v[d];              \
        v[b] = rotr64(v[b] ^ v[c], 63);  \
    } while (0)

/* The compression function F: block is 128 bytes, t the bytes hashed so far with it. */
static void blake2b_compress(uint64_t h[8], const uint8_t block[128], uint64_t t, int last) {
    uint64_t v[16], m[16];
    for (int i = 0; i < 16; i++) {
        uint64_t word = 0;
        for (int j = 7; j >= 0; j--) word = (word << 8) | block[8 * i + j]; /* little-endian */
        m[i] = word;
    }
    for (int i = 0; i < 8; i++) {
        v[i] = h[i];
        v[i + 8] = BLAKE2B_IV[i];
    }
    v[12] ^= t; /* the counter's high word stays 0: fix ids are far shorter than 2**64 bytes */
    if (last) v[14] = ~v[14];
    for (int r = 0; r < 12; r++) {
        const uint8_t *s = BLAKE2B_SIGMA[r];
        BLAKE2B_G(0, 4, 8, 12, m[s[0]], m[s[1]]);
        BLAKE2B_G(1, 5, 9, 13, m[s[2]], m[s[3]]);
        BLAKE2B_G(2, 6, 10, 14, m[s[4]], m[s[5]]);
        BLAKE2B_G(3, 7, 11, 15, m[s[6]], m[s[7]]);
        BLAKE2B_G(0, 5, 10, 15, m[s[8]], m[s[9]]);
        BLAKE2B_G(1, 6, 11, 12, m[s[10]], m[s[11]]);
        BLAKE2B_G(2, 7, 8, 13, m[s[12]], m[s[13]]);
        BLAKE2B_G(3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
    for (int i = 0; i < 8; i++) h[i] ^= v[i] ^ v[i + 8];
}

/* The first out_len (1..8) bytes of BLAKE2b-8*out_len of data, read as a big-endian int. */
static uint64_t blake2b_short(const uint8_t *data, size_t len, int out_len) {
    uint64_t h[8];
    uint8_t block[128];
    memcpy(h, BLAKE2B_IV, sizeof(h));
    h[0] ^= 0x01010000ULL ^ (uint64_t)out_len; /* depth 1, fanout 1, no key */
    uint64_t t = 0;
    while (len > 128) {
        t += 128;
        blake2b_compress(h, data, t, 0);
        data += 128;
        len -= 128;
    }
    memset(block, 0, sizeof(block));
    memcpy(block, data, len);
    blake2b_compress(h, block, t + len, 1);
    uint64_t value = 0;
    for (int i = 0; i < out_len; i++) value = (value << 8) | ((h[0] >> (8 * i)) & 0xFF);
    return value;
}

static PyObject *fix_hash(PyObject *Py_UNUSED(module), PyObject *fix_id) {
    if (!PyUnicode_Check(fix_id)) {
        PyErr_SetString(PyExc_TypeError, "fix_hash() needs a str");
        return NULL;
    }
    Py_ssize_t len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(fix_id, &len);
    if (utf8 == NULL) return NULL;
    return PyLong_FromUnsignedLongLong(blake2b_short((const uint8_t *)utf8, (size_t)len, 6));
}

static PyMethodDef methods[] = {
    {"epoch_ms", (PyCFunction)epoch_ms, METH_O,
     "epoch_ms(dt, /)\n--\n\nround(dt.timestamp() * 1000): milliseconds since the epoch."},
    {"fix_hash", (PyCFunction)fix_hash, METH_O,
     "fix_hash(fix_id, /)\n--\n\n"
     "A 48-bit hash of a fix id: its 6-byte BLAKE2b digest (of the UTF-8), read big-endian."},
    {"recent_match", (PyCFunction)(void (*)(void))recent_match, METH_FASTCALL,
     "recent_match(flat, h, t_ms, /)\n--\n\n"
     "In (hash, ts) pairs, oldest first: 1 if the first pair matching either has hash h, "
     "2 if it has ts t_ms, 0 if none matches."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cleaning", "The processors' per-fix cleaning steps in C.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__cleaning(void) {
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) {
        return NULL;
    }
    return PyModule_Create(&module);
}
