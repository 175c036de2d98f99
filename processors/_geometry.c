/*
 * processors._geometry: the per-fix geometry of the processors in C, where Python's call and
 * float overheads were most of the cost: haversine_m, bearing_deg, convex_hull, the stop
 * rule's window test (window_stopped, and tail_start, which repeats it while it cuts a moving
 * courier's window from the front), inside_convex, the bounding of the stop window
 * (compress_window), the simplification of trip paths and the geofence test (intersects_rings;
 * see processors/geo.py, processors/segmenter.py and processors/zones.py).
 *
 * intersects_rings is GEOS's point-in-area test (the ray crossing count its prepared polygons
 * run for a point), with GEOS's own orientation filter: where that filter is certain it is
 * GEOS's answer bit for bit, and where it is not (a point within rounding of an edge's line)
 * it answers None and the caller asks GEOS.
 *
 * simplified_indices is GEOS's Douglas-Peucker simplification of a line (shapely's
 * simplify(preserve_topology=False) of a LineString), which costs far less than building the
 * shapely geometry it was asked through: the same rule and the same distance arithmetic
 * (JTS's point-to-segment distance), so the same points are kept.
 *
 * haversine_m, bearing_deg, convex_hull, inside_convex, tail_start and compress_window compute
 * exactly what their Python definitions did, operation for operation (setup.py turns off fused
 * multiply-adds): the same doubles come out, and tests/test_processors_geo.py keeps those
 * definitions to hold them to it.
 *
 * window_stopped answers "does the window fit?". MovingPandas' rule: the diagonal (first to
 * third corner) of GEOS's minimum rotated rectangle of the (lon, lat) points, measured on the
 * sphere, is below max_diameter. Asking GEOS through shapely costs ~6 us a window, most of it
 * in numpy and ufunc calls, and the worker asks once or twice per fix. This answers the same
 * question without GEOS where the answer is certain and says "don't know" (None) otherwise;
 * the caller then asks GEOS.
 *
 * Certain means: GEOS's rectangle is the minimum-area one, which stands on an edge of the
 * convex hull. We compute that rectangle on every hull edge (rotating calipers); which of its
 * two diagonals GEOS lists first depends on how GEOS builds the ring, so both are measured,
 * on every rectangle within a hair of the minimum area (GEOS may settle a near-tie otherwise).
 * If all those diagonals are below max_diameter by a margin (MARGIN relative plus MARGIN_M)
 * the window fits; if all are above it by the margin it does not; otherwise None. The margin
 * dwarfs the rounding by which GEOS's corners can differ from ours.
 *
 * Where GEOS sees collinear points it answers with the segment between the extreme ones.
 * Where they are collinear but for rounding (a hull thinner than THIN_DEG, 0.1 mm) it
 * sometimes answers with a rectangle that leaves points out: three points in a straight line
 * 80 m long measure 40 m. That is a GEOS bug, not MovingPandas' rule, so this module measures
 * the segment between the farthest points there too, as for collinear ones. Segments (and two
 * points) are measured with haversine_m itself, exactly: no margin needed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define EARTH_RADIUS_M 6371008.8
#define MARGIN 1e-7
#define MARGIN_M 1e-6 /* metres: GEOS's corners are off by some ulps of 180 degrees (3 nm) */
#define AREA_TIE 1e-6
#define THIN_DEG 1e-9
#define STACK_POINTS 64

static const double RAD = 3.141592653589793 / 180.0;

typedef struct {
    double lon, lat; /* as given: sorted, told apart and measured by these */
    double x, y;     /* relative to the first point: shapes are computed with these */
} Pt;

/* The Python haversine it replaced, operation for operation (the tests keep that one). */
static double haversine_m(double lat1, double lon1, double lat2, double lon2) {
    double p1 = lat1 * RAD;
    double p2 = lat2 * RAD;
    double dp = p2 - p1;
    double dl = (lon2 - lon1) * RAD;
    double s1 = sin(dp / 2);
    double s2 = sin(dl / 2);
    double a = s1 * s1 + cos(p1) * cos(p2) * (s2 * s2);
    double r = sqrt(a);
    return 2 * EARTH_RADIUS_M * asin(r < 1.0 ? r : 1.0);
}

static int cmp_pt(const void *a, const void *b) {
    const Pt *p = a, *q = b;
    if (p->lon != q->lon) return p->lon < q->lon ? -1 : 1;
    if (p->lat != q->lat) return p->lat < q->lat ? -1 : 1;
    return 0;
}

static double cross(Pt o, Pt a, Pt b) {
    return (a.x - o.x) * (b.y - o.y) - (a.y - o.y) * (b.x - o.x);
}

/* Andrew's monotone chain over pts (sorted and made unique in place); counter-clockwise,
 * collinear points dropped. hull needs room for n + 1 points; returns its vertex count. */
static Py_ssize_t convex_hull(Pt *pts, Py_ssize_t n, Pt *hull) {
    qsort(pts, (size_t)n, sizeof(Pt), cmp_pt);
    Py_ssize_t m = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (m == 0 || cmp_pt(&pts[i], &pts[m - 1]) != 0) pts[m++] = pts[i];
    }
    n = m;
    if (n <= 2) {
        for (Py_ssize_t i = 0; i < n; i++) hull[i] = pts[i];
        return n;
    }
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        while (k >= 2 && cross(hull[k - 2], hull[k - 1], pts[i]) <= 0) k--;
        hull[k++] = pts[i];
    }
    for (Py_ssize_t i = n - 2, lower = k + 1; i >= 0; i--) {
        while (k >= lower && cross(hull[k - 2], hull[k - 1], pts[i]) <= 0) k--;
        hull[k++] = pts[i];
    }
    return k - 1; /* the last point is the first again */
}

/* Verdict of one measured length: 1 fits, 0 does not, -1 too close to tell. */
static int verdict(double length, double max_diameter) {
    double margin = MARGIN * max_diameter + MARGIN_M;
    if (length < max_diameter - margin) return 1;
    if (length >= max_diameter + margin) return 0;
    return -1;
}

/* The rule for a segment (two points, or points on a line): its length, exactly. */
static int segment_fits(Pt a, Pt b, double max_diameter) {
    return haversine_m(a.lat, a.lon, b.lat, b.lon) < max_diameter;
}

/* Combine verdicts: -2 is "none yet". */
static int combine(int so_far, int v) {
    if (so_far == -2) return v;
    return so_far == v ? v : -1;
}

/* The rectangle standing on hull edge i: its axes u, v and extents along them from h[i]. */
typedef struct {
    double ux, uy, lo_u, hi_u, lo_v, hi_v, area;
} Rect;

static Rect edge_rectangle(const Pt *h, Py_ssize_t n, Py_ssize_t i) {
    Rect r = {0, 0, 0, 0, 0, 0, INFINITY};
    Pt a = h[i], b = h[(i + 1) % n];
    double ex = b.x - a.x, ey = b.y - a.y, len = hypot(ex, ey);
    if (len == 0.0) return r;
    r.ux = ex / len;
    r.uy = ey / len;
    for (Py_ssize_t j = 0; j < n; j++) {
        double dx = h[j].x - a.x, dy = h[j].y - a.y;
        double u = dx * r.ux + dy * r.uy, v = -dx * r.uy + dy * r.ux;
        if (u < r.lo_u) r.lo_u = u;
        if (u > r.hi_u) r.hi_u = u;
        if (v < r.lo_v) r.lo_v = v;
        if (v > r.hi_v) r.hi_v = v;
    }
    r.area = (r.hi_u - r.lo_u) * (r.hi_v - r.lo_v);
    return r;
}

/* The rectangle decision for hull h (n >= 3 vertices). */
static int rectangle_verdict(const Pt *h, Py_ssize_t n, double max_diameter) {
    Rect stack_rects[STACK_POINTS];
    Rect *rects = n <= STACK_POINTS ? stack_rects : PyMem_Malloc(sizeof(Rect) * (size_t)n);
    if (rects == NULL) return -1;
    double min_area = INFINITY;
    for (Py_ssize_t i = 0; i < n; i++) {
        rects[i] = edge_rectangle(h, n, i);
        if (rects[i].area < min_area) min_area = rects[i].area;
    }
    /* Thinner than THIN_DEG: the segment between the farthest hull points (see the top). */
    double extent = 0.0;
    Py_ssize_t far_a = 0, far_b = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        for (Py_ssize_t j = i + 1; j < n; j++) {
            double d = hypot(h[j].x - h[i].x, h[j].y - h[i].y);
            if (d > extent) {
                extent = d;
                far_a = i;
                far_b = j;
            }
        }
    }
    int result;
    if (!(min_area > THIN_DEG * extent)) {
        result = segment_fits(h[far_a], h[far_b], max_diameter);
    } else {
        result = -2;
        for (Py_ssize_t i = 0; i < n && result != -1; i++) {
            Rect r = rects[i];
            if (!(r.area <= min_area * (1.0 + AREA_TIE))) continue;
            /* corner (s, t) = h[i] + s u + t v, in (lon, lat) */
            double x = h[i].lon, y = h[i].lat;
            double x00 = x + r.lo_u * r.ux - r.lo_v * r.uy, y00 = y + r.lo_u * r.uy + r.lo_v * r.ux;
            double x11 = x + r.hi_u * r.ux - r.hi_v * r.uy, y11 = y + r.hi_u * r.uy + r.hi_v * r.ux;
            double x10 = x + r.hi_u * r.ux - r.lo_v * r.uy, y10 = y + r.hi_u * r.uy + r.lo_v * r.ux;
            double x01 = x + r.lo_u * r.ux - r.hi_v * r.uy, y01 = y + r.lo_u * r.uy + r.hi_v * r.ux;
            result = combine(result, verdict(haversine_m(y00, x00, y11, x11), max_diameter));
            result = combine(result, verdict(haversine_m(y10, x10, y01, x01), max_diameter));
        }
        if (result == -2) result = -1; /* no rectangle at all: let GEOS answer */
    }
    if (rects != stack_rects) PyMem_Free(rects);
    return result;
}

/* Room for n points and their hull (n + 1): on the stack up to STACK_POINTS, else on the heap.
 * points_room sets an exception and returns -1 if the heap has none; points_free is safe
 * after either outcome. */
typedef struct {
    Pt stack_pts[STACK_POINTS], stack_hull[STACK_POINTS + 1];
    Pt *pts, *hull;
} PointsRoom;

static int points_room(PointsRoom *room, Py_ssize_t n) {
    room->pts = room->stack_pts;
    room->hull = room->stack_hull;
    if (n <= STACK_POINTS) return 0;
    room->pts = PyMem_Malloc(sizeof(Pt) * (size_t)n);
    room->hull = PyMem_Malloc(sizeof(Pt) * (size_t)(n + 1));
    if (room->pts == NULL || room->hull == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void points_free(PointsRoom *room) {
    if (room->pts != room->stack_pts) PyMem_Free(room->pts);
    if (room->hull != room->stack_hull) PyMem_Free(room->hull);
}

static int read_point(PyObject *item, double *lat, double *lon) {
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) < 3) {
        PyErr_SetString(PyExc_TypeError, "window points are (t_ms, lat, lon, ...) tuples");
        return -1;
    }
    *lat = PyFloat_AsDouble(PyTuple_GET_ITEM(item, 1));
    *lon = PyFloat_AsDouble(PyTuple_GET_ITEM(item, 2));
    return PyErr_Occurred() ? -1 : 0;
}

/* args[0..n) as doubles into out; -1 with an exception set otherwise. */
static int read_doubles(PyObject *const *args, int n, double *out) {
    for (int i = 0; i < n; i++) {
        out[i] = PyFloat_AsDouble(args[i]);
        if (out[i] == -1.0 && PyErr_Occurred()) return -1;
    }
    return 0;
}

/* The arguments (sequence, number) of window_stopped and simplified_indices: the sequence as
 * a new fast sequence (NULL with an exception set on a bad call) and the number in *value. */
static PyObject *sequence_and_number(PyObject *const *args, Py_ssize_t nargs, const char *usage,
                                     double *value) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, usage);
        return NULL;
    }
    *value = PyFloat_AsDouble(args[1]);
    if (*value == -1.0 && PyErr_Occurred()) return NULL;
    return PySequence_Fast(args[0], usage);
}

/* (x, y) tuples into pts (x, y and lon, lat alike); -1 with an exception set otherwise. */
static int read_xy(PyObject **items, Py_ssize_t n, Pt *pts, const char *what) {
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = items[i];
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
            PyErr_Format(PyExc_TypeError, "%s: points are (x, y) tuples", what);
            return -1;
        }
        pts[i].x = pts[i].lon = PyFloat_AsDouble(PyTuple_GET_ITEM(item, 0));
        pts[i].y = pts[i].lat = PyFloat_AsDouble(PyTuple_GET_ITEM(item, 1));
        if (PyErr_Occurred()) return -1;
    }
    return 0;
}

/* Window points items[0..n): lon, lat as given; x, y relative to the first. */
static int read_window(PyObject **items, Py_ssize_t n, Pt *pts) {
    double lat0, lon0, lat, lon;
    if (read_point(items[0], &lat0, &lon0) < 0) return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (read_point(items[i], &lat, &lon) < 0) return -1;
        pts[i].lon = lon;
        pts[i].lat = lat;
        pts[i].x = lon - lon0;
        pts[i].y = lat - lat0;
    }
    return 0;
}

/* Does the window items[0..n) (n >= 2) fit? 1 yes, 0 no, -1 only GEOS can tell, -2 error. */
static int window_verdict(PyObject **items, Py_ssize_t n, double max_diameter) {
    PointsRoom room;
    int v = -2;
    if (points_room(&room, n) < 0 || read_window(items, n, room.pts) < 0) goto done;
    Pt *pts = room.pts, *hull = room.hull;
    if (n == 2) {
        v = haversine_m(pts[0].lat, pts[0].lon, pts[1].lat, pts[1].lon) < max_diameter;
        goto done;
    }
    Py_ssize_t h = convex_hull(pts, n, hull);
    if (h == 1) {
        v = max_diameter > 0.0;
    } else if (h == 2) { /* GEOS's answer for collinear points too: the extreme ones */
        v = segment_fits(hull[0], hull[1], max_diameter);
    } else {
        v = rectangle_verdict(hull, h, max_diameter);
    }
done:
    points_free(&room);
    return v;
}

static PyObject *window_stopped(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    double max_diameter;
    PyObject *window = sequence_and_number(
        args, nargs, "window_stopped(window, max_diameter): the window is a sequence",
        &max_diameter);
    if (window == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(window);
    int v = n < 2 ? max_diameter > 0.0
                  : window_verdict(PySequence_Fast_ITEMS(window), n, max_diameter);
    Py_DECREF(window);
    if (v == -2) return NULL;
    return v < 0 ? Py_NewRef(Py_None) : PyBool_FromLong(v);
}

static PyObject *tail_start(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "tail_start(window, start, max_diameter, undecided)");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred()) return NULL;
    double max_diameter = PyFloat_AsDouble(args[2]);
    if (max_diameter == -1.0 && PyErr_Occurred()) return NULL;
    PyObject *window = PySequence_Fast(args[0], "tail_start: the window is a sequence");
    if (window == NULL) return NULL;
    PyObject **items = PySequence_Fast_ITEMS(window);
    Py_ssize_t n = PySequence_Fast_GET_SIZE(window), i = start < 0 ? 0 : start;
    for (; n - i >= 2; i++) {
        int v = window_verdict(items + i, n - i, max_diameter);
        if (v == -1) { /* GEOS decides: undecided(window[i:], max_diameter) */
            PyObject *tail = PySequence_GetSlice(window, i, n);
            PyObject *fits = tail == NULL ? NULL
                                          : PyObject_CallFunctionObjArgs(args[3], tail, args[2],
                                                                         NULL);
            Py_XDECREF(tail);
            v = fits == NULL ? -2 : PyObject_IsTrue(fits);
            Py_XDECREF(fits);
            if (v < 0) v = -2;
        }
        if (v == -2) {
            Py_DECREF(window);
            return NULL;
        }
        if (v == 1) break;
    }
    Py_DECREF(window);
    return PyLong_FromSsize_t(i);
}

static PyObject *inside_convex(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "inside_convex(hull, x, y)");
        return NULL;
    }
    double xy[2];
    if (read_doubles(args + 1, 2, xy) < 0) return NULL;
    double x = xy[0], y = xy[1];
    PyObject *seq = PySequence_Fast(args[0], "inside_convex: the hull is a sequence");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PointsRoom room;
    int inside = n >= 3;
    if (points_room(&room, n) < 0 || read_xy(PySequence_Fast_ITEMS(seq), n, room.pts,
                                             "inside_convex") < 0) {
        inside = -1;
    }
    Pt p = {x, y, x, y};
    for (Py_ssize_t i = 0; inside == 1 && i < n; i++) {
        if (!(cross(room.pts[i], room.pts[(i + 1) % n], p) >= 0)) inside = 0;
    }
    points_free(&room);
    Py_DECREF(seq);
    return inside < 0 ? NULL : PyBool_FromLong(inside);
}

/* A window point (a tuple subclass: t_ms, lat, lon, cum_m, k, n, mlat, mlon) like p, with n
 * and the means replaced. */
static PyObject *folded_point(PyObject *p, long n, double mlat, double mlon) {
    PyTypeObject *type = Py_TYPE(p);
    PyObject *values[3] = {PyLong_FromLong(n), PyFloat_FromDouble(mlat), PyFloat_FromDouble(mlon)};
    PyObject *point = NULL;
    if (values[0] != NULL && values[1] != NULL && values[2] != NULL) {
        point = type->tp_alloc(type, 8);
    }
    if (point == NULL) {
        for (int j = 0; j < 3; j++) Py_XDECREF(values[j]);
        return NULL;
    }
    for (Py_ssize_t j = 0; j < 5; j++) PyTuple_SET_ITEM(point, j, Py_NewRef(PyTuple_GET_ITEM(p, j)));
    for (Py_ssize_t j = 0; j < 3; j++) PyTuple_SET_ITEM(point, 5 + j, values[j]);
    return point;
}

/* The weight (n) and means of a window point; -1 with an exception on a malformed point. */
static int read_weight(PyObject *p, long *n, double *mlat, double *mlon) {
    if (!PyTuple_Check(p) || PyTuple_GET_SIZE(p) != 8) {
        PyErr_SetString(PyExc_TypeError, "window points are 8-tuples (WPoint)");
        return -1;
    }
    *n = PyLong_AsLong(PyTuple_GET_ITEM(p, 5));
    *mlat = PyFloat_AsDouble(PyTuple_GET_ITEM(p, 6));
    *mlon = PyFloat_AsDouble(PyTuple_GET_ITEM(p, 7));
    return PyErr_Occurred() ? -1 : 0;
}

/* The window without the points not in keep; a dropped point's weight goes to the next kept
 * one (the last point is always kept). */
static PyObject *fold(PyObject **items, Py_ssize_t n, const char *keep) {
    PyObject *out = PyList_New(0);
    long carry_n = 0;
    double carry_lat = 0.0, carry_lon = 0.0;
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        long pn;
        double mlat, mlon;
        if (read_weight(items[i], &pn, &mlat, &mlon) < 0) {
            Py_CLEAR(out);
            break;
        }
        if (!keep[i]) {
            carry_n += pn;
            carry_lat += mlat * (double)pn;
            carry_lon += mlon * (double)pn;
            continue;
        }
        PyObject *point;
        if (!carry_n) {
            point = Py_NewRef(items[i]);
        } else {
            long total = pn + carry_n;
            point = folded_point(items[i], total, (mlat * (double)pn + carry_lat) / (double)total,
                                 (mlon * (double)pn + carry_lon) / (double)total);
            carry_n = 0;
            carry_lat = carry_lon = 0.0;
        }
        if (point == NULL || PyList_Append(out, point) < 0) Py_CLEAR(out);
        Py_XDECREF(point);
    }
    return out;
}

static PyObject *compress_window(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "compress_window(window, cap, breaker)");
        return NULL;
    }
    Py_ssize_t cap = PyLong_AsSsize_t(args[1]);
    if (cap == -1 && PyErr_Occurred()) return NULL;
    if (cap < 3) {
        PyErr_SetString(PyExc_ValueError, "compress_window: cap must be at least 3");
        return NULL;
    }
    int breaker = PyObject_IsTrue(args[2]);
    if (breaker < 0) return NULL;
    PyObject *window = PySequence_Fast(args[0], "compress_window: the window is a sequence");
    if (window == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(window);
    if (n <= cap) return window; /* a list stays the same list */
    PyObject **items = PySequence_Fast_ITEMS(window);
    Py_ssize_t skip = breaker ? 1 : 0, m = n - skip;
    PyObject *answer = NULL;
    PointsRoom room;
    Pt *sorted = PyMem_Malloc(sizeof(Pt) * (size_t)m);
    char *keep = PyMem_Calloc((size_t)n, 1);
    Py_ssize_t *kept = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)n);
    if (points_room(&room, m) < 0) goto done;
    if (sorted == NULL || keep == NULL || kept == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* The hull of the points after the breaker, relative to the first of them; every point
     * equal to a hull vertex is kept, as are the first, the breaker's successor and the last. */
    if (read_window(items + skip, m, room.pts) < 0) goto done;
    memcpy(sorted, room.pts, sizeof(Pt) * (size_t)m);
    Py_ssize_t h = convex_hull(sorted, m, room.hull);
    for (Py_ssize_t i = 0; i < m; i++) {
        for (Py_ssize_t j = 0; j < h; j++) {
            if (room.pts[i].x == room.hull[j].x && room.pts[i].y == room.hull[j].y) {
                keep[i + skip] = 1;
                break;
            }
        }
    }
    keep[0] = keep[skip] = keep[n - 1] = 1;
    Py_ssize_t count = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (keep[i]) kept[count++] = i;
    }
    if (count > cap) { /* the first, the last and every step-th point between them */
        Py_ssize_t middle = count - 2, step = (middle + cap - 3) / (cap - 2);
        memset(keep, 0, (size_t)n);
        keep[kept[0]] = keep[kept[count - 1]] = 1;
        for (Py_ssize_t j = 0; j < middle; j += step) keep[kept[1 + j]] = 1;
    }
    answer = fold(items, n, keep);
done:
    points_free(&room);
    PyMem_Free(sorted);
    PyMem_Free(keep);
    PyMem_Free(kept);
    Py_DECREF(window);
    return answer;
}

/* GEOS's orientation of q against the segment p1 -> p2 (CGAlgorithmsDD's double filter, the
 * same arithmetic): 1 left, -1 right, 0 collinear; 2 where the filter cannot be certain
 * (GEOS then computes in double-double). */
static int orientation_filtered(double p1x, double p1y, double p2x, double p2y, double qx,
                                double qy) {
    double detleft = (p1x - qx) * (p2y - qy);
    double detright = (p1y - qy) * (p2x - qx);
    double det = detleft - detright, detsum;
    if (detleft > 0.0) {
        if (detright <= 0.0) return (det > 0.0) - (det < 0.0);
        detsum = detleft + detright;
    } else if (detleft < 0.0) {
        if (detright >= 0.0) return (det > 0.0) - (det < 0.0);
        detsum = -detleft - detright;
    } else {
        return (det > 0.0) - (det < 0.0);
    }
    double errbound = 1e-15 * detsum; /* GEOS's DP_SAFE_EPSILON */
    if (det >= errbound || -det >= errbound) return (det > 0.0) - (det < 0.0);
    return 2;
}

enum { OUTSIDE = 0, INSIDE = 1, UNDECIDED = 2 };

/* Where (x, y) is against the area bounded by rings (closed (x, y) double sequences): GEOS's
 * ray crossing count (RayCrossingCounter, as IndexedPointInAreaLocator runs it over every
 * ring of a polygon or multipolygon at once), on the boundary counting as inside, which is
 * what intersects() answers for a point. */
static int area_locate(PyObject *rings, double x, double y) {
    Py_ssize_t n_rings = PyTuple_GET_SIZE(rings), crossings = 0;
    for (Py_ssize_t r = 0; r < n_rings; r++) {
        PyObject *ring = PyTuple_GET_ITEM(rings, r);
        const double *c = (const double *)PyBytes_AS_STRING(ring);
        Py_ssize_t n = PyBytes_GET_SIZE(ring) / (Py_ssize_t)(2 * sizeof(double));
        for (Py_ssize_t i = 1; i < n; i++) {
            double x1 = c[2 * i - 2], y1 = c[2 * i - 1], x2 = c[2 * i], y2 = c[2 * i + 1];
            if (x1 < x && x2 < x) continue; /* strictly left of the point */
            if (x == x2 && y == y2) return INSIDE; /* a vertex */
            if (y1 == y && y2 == y) { /* horizontal: on it or not counted */
                double lo = x1 < x2 ? x1 : x2, hi = x1 < x2 ? x2 : x1;
                if (x >= lo && x <= hi) return INSIDE;
                continue;
            }
            /* upward edges include their start, downward ones their end */
            if ((y1 > y && y2 <= y) || (y2 > y && y1 <= y)) {
                int orient = orientation_filtered(x1, y1, x2, y2, x, y);
                if (orient == 2) return UNDECIDED;
                if (orient == 0) return INSIDE;
                if (y2 < y1) orient = -orient;
                if (orient == 1) crossings++;
            }
        }
    }
    return crossings % 2 ? INSIDE : OUTSIDE;
}

static PyObject *intersects_rings(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 3 || !PyTuple_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "intersects_rings(shapes, x, y): shapes is a tuple");
        return NULL;
    }
    double xy[2];
    if (read_doubles(args + 1, 2, xy) < 0) return NULL;
    double x = xy[0], y = xy[1];
    if (!isfinite(x) || !isfinite(y)) Py_RETURN_NONE; /* GEOS's business */
    PyObject *shapes = args[0];
    Py_ssize_t n = PyTuple_GET_SIZE(shapes);
    for (Py_ssize_t k = 0; k < n; k++) { /* checked first: a bad ring must not pass unseen */
        PyObject *rings = PyTuple_GET_ITEM(shapes, k);
        if (!PyTuple_Check(rings)) goto bad;
        for (Py_ssize_t r = 0; r < PyTuple_GET_SIZE(rings); r++) {
            PyObject *ring = PyTuple_GET_ITEM(rings, r);
            if (!PyBytes_Check(ring) || PyBytes_GET_SIZE(ring) % (2 * sizeof(double))) goto bad;
        }
    }
    PyObject *answer = PyList_New(n);
    if (answer == NULL) return NULL;
    for (Py_ssize_t k = 0; k < n; k++) {
        int where = area_locate(PyTuple_GET_ITEM(shapes, k), x, y);
        if (where == UNDECIDED) {
            Py_DECREF(answer);
            Py_RETURN_NONE;
        }
        PyList_SET_ITEM(answer, k, PyBool_FromLong(where == INSIDE));
    }
    return answer;
bad:
    PyErr_SetString(PyExc_TypeError,
                    "intersects_rings: each shape is a tuple of rings, each ring the bytes of "
                    "(x, y) doubles");
    return NULL;
}

/* The (lat1, lon1, lat2, lon2) arguments of haversine_m and bearing_deg; -1 with an error. */
static int two_points(PyObject *const *args, Py_ssize_t nargs, const char *usage, double v[4]) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    return read_doubles(args, 4, v);
}

static PyObject *py_haversine_m(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    double v[4];
    if (two_points(args, nargs, "haversine_m(lat1, lon1, lat2, lon2)", v) < 0) return NULL;
    return PyFloat_FromDouble(haversine_m(v[0], v[1], v[2], v[3]));
}

/* The Python bearing it replaced, operation for operation: math.degrees multiplies by
   180 / pi, and Python's float % takes the divisor's sign (fmod, then shifted by 360). */
static double bearing_deg(double lat1, double lon1, double lat2, double lon2) {
    double p1 = lat1 * RAD;
    double p2 = lat2 * RAD;
    double dl = (lon2 - lon1) * RAD;
    double x = sin(dl) * cos(p2);
    double y = cos(p1) * sin(p2) - sin(p1) * cos(p2) * cos(dl);
    double deg = fmod(atan2(x, y) * (180.0 / 3.141592653589793), 360.0);
    if (deg != 0.0) {
        if (deg < 0.0) deg += 360.0;
    } else {
        deg = 0.0; /* copysign(0.0, 360.0) */
    }
    return deg >= 360.0 ? 0.0 : deg;
}

static PyObject *py_bearing_deg(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    double v[4];
    if (two_points(args, nargs, "bearing_deg(lat1, lon1, lat2, lon2)", v) < 0) return NULL;
    return PyFloat_FromDouble(bearing_deg(v[0], v[1], v[2], v[3]));
}

static PyObject *py_convex_hull(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "convex_hull(points)");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(args[0], "convex_hull: the points are a sequence");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PointsRoom room;
    PyObject *answer = NULL;
    if (points_room(&room, n) < 0 || read_xy(items, n, room.pts, "convex_hull") < 0) goto done;
    Pt *hull = room.hull;
    Py_ssize_t h = convex_hull(room.pts, n, hull);
    answer = PyList_New(h);
    for (Py_ssize_t i = 0; answer != NULL && i < h; i++) {
        PyObject *point = Py_BuildValue("(dd)", hull[i].x, hull[i].y);
        if (point == NULL) Py_CLEAR(answer);
        else PyList_SET_ITEM(answer, i, point);
    }
done:
    points_free(&room);
    Py_DECREF(seq);
    return answer;
}

/* GEOS's distance from p to segment ab, operation for operation. */
static double point_to_segment(Pt p, Pt a, Pt b) {
    if (a.x == b.x && a.y == b.y) return sqrt((p.x - a.x) * (p.x - a.x) + (p.y - a.y) * (p.y - a.y));
    double len2 = (b.x - a.x) * (b.x - a.x) + (b.y - a.y) * (b.y - a.y);
    double r = ((p.x - a.x) * (b.x - a.x) + (p.y - a.y) * (b.y - a.y)) / len2;
    if (r <= 0.0) return sqrt((p.x - a.x) * (p.x - a.x) + (p.y - a.y) * (p.y - a.y));
    if (r >= 1.0) return sqrt((p.x - b.x) * (p.x - b.x) + (p.y - b.y) * (p.y - b.y));
    double s = ((a.y - p.y) * (b.x - a.x) - (a.x - p.x) * (b.y - a.y)) / len2;
    return fabs(s) * sqrt(len2);
}

/* Douglas-Peucker: keep[k] = 0 for the points dropped. A section (i, j) keeps its farthest
 * point (the first of equals) and splits there if that point is farther than tolerance;
 * otherwise all its inner points go. Sections are independent, so a stack replaces GEOS's
 * recursion. */
static int douglas_peucker(const Pt *pts, Py_ssize_t n, double tolerance, char *keep) {
    Py_ssize_t *stack = PyMem_Malloc(sizeof(Py_ssize_t) * 2 * (size_t)n);
    if (stack == NULL) return -1;
    Py_ssize_t top = 0;
    memset(keep, 1, (size_t)n);
    stack[top++] = 0;
    stack[top++] = n - 1;
    while (top > 0) {
        Py_ssize_t j = stack[--top], i = stack[--top];
        if (i + 1 >= j) continue;
        double farthest = -1.0;
        Py_ssize_t at = i;
        for (Py_ssize_t k = i + 1; k < j; k++) {
            double d = point_to_segment(pts[k], pts[i], pts[j]);
            if (d > farthest) {
                farthest = d;
                at = k;
            }
        }
        if (farthest <= tolerance) {
            memset(keep + i + 1, 0, (size_t)(j - i - 1));
        } else {
            stack[top++] = i;
            stack[top++] = at;
            stack[top++] = at;
            stack[top++] = j;
        }
    }
    PyMem_Free(stack);
    return 0;
}

static PyObject *simplified_indices(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    double tolerance;
    PyObject *seq = sequence_and_number(
        args, nargs, "simplified_indices(points, tolerance): the points are a sequence",
        &tolerance);
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *answer = NULL;
    Pt *pts = PyMem_Malloc(sizeof(Pt) * (size_t)(n ? n : 1));
    char *keep = PyMem_Malloc((size_t)(n ? n : 1));
    if (pts == NULL || keep == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (read_xy(items, n, pts, "simplified_indices") < 0) goto done;
    if (n > 0 && douglas_peucker(pts, n, tolerance, keep) < 0) {
        PyErr_NoMemory();
        goto done;
    }
    answer = PyList_New(0);
    for (Py_ssize_t i = 0; answer != NULL && i < n; i++) {
        if (!keep[i]) continue;
        PyObject *index = PyLong_FromSsize_t(i);
        if (index == NULL || PyList_Append(answer, index) < 0) Py_CLEAR(answer);
        Py_XDECREF(index);
    }
done:
    PyMem_Free(pts);
    PyMem_Free(keep);
    Py_DECREF(seq);
    return answer;
}

static PyMethodDef methods[] = {
    {"haversine_m", (PyCFunction)(void (*)(void))py_haversine_m, METH_FASTCALL,
     "haversine_m(lat1, lon1, lat2, lon2, /)\n--\n\nGreat-circle distance in metres "
     "(R = 6,371,008.8 m)."},
    {"bearing_deg", (PyCFunction)(void (*)(void))py_bearing_deg, METH_FASTCALL,
     "bearing_deg(lat1, lon1, lat2, lon2, /)\n--\n\nInitial bearing from point 1 to point 2, "
     "degrees in [0, 360)."},
    {"convex_hull", (PyCFunction)(void (*)(void))py_convex_hull, METH_FASTCALL,
     "convex_hull(points, /)\n--\n\nCounter-clockwise hull vertices of (x, y) points "
     "(Andrew's monotone chain); collinear points dropped."},
    {"window_stopped", (PyCFunction)(void (*)(void))window_stopped, METH_FASTCALL,
     "window_stopped(window, max_diameter, /)\n--\n\n"
     "Whether the window's stop rectangle fits max_diameter; None where only GEOS can tell."},
    {"tail_start", (PyCFunction)(void (*)(void))tail_start, METH_FASTCALL,
     "tail_start(window, start, max_diameter, undecided, /)\n--\n\n"
     "The first i >= start where window[i:] fits max_diameter (or has one point left); "
     "undecided(window[i:], max_diameter) answers where only GEOS can tell."},
    {"inside_convex", (PyCFunction)(void (*)(void))inside_convex, METH_FASTCALL,
     "inside_convex(hull, x, y, /)\n--\n\n"
     "Whether (x, y) lies inside or on the counter-clockwise convex polygon hull (3+ points)."},
    {"compress_window", (PyCFunction)(void (*)(void))compress_window, METH_FASTCALL,
     "compress_window(window, cap, breaker, /)\n--\n\n"
     "The window bounded at cap points: hull-interior points dropped first, their weight "
     "folded into the next kept point."},
    {"intersects_rings", (PyCFunction)(void (*)(void))intersects_rings, METH_FASTCALL,
     "intersects_rings(shapes, x, y, /)\n--\n\n"
     "For each shape (a tuple of closed rings, each the bytes of its (x, y) doubles): whether "
     "the point (x, y) intersects the area the rings bound, as GEOS answers; None where GEOS's "
     "orientation filter cannot be certain."},
    {"simplified_indices", (PyCFunction)(void (*)(void))simplified_indices, METH_FASTCALL,
     "simplified_indices(points, tolerance, /)\n--\n\n"
     "Indices of the (x, y) points that GEOS's Douglas-Peucker simplification keeps."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_geometry", "The processors' per-fix geometry in C.",
    -1, methods,
};

PyMODINIT_FUNC PyInit__geometry(void) { return PyModule_Create(&module); }
