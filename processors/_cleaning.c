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
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <math.h>

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

static PyMethodDef methods[] = {
    {"epoch_ms", (PyCFunction)epoch_ms, METH_O,
     "epoch_ms(dt, /)\n--\n\nround(dt.timestamp() * 1000): milliseconds since the epoch."},
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
