/* The in-memory rate-limit counters compiled: the same sliding-window arithmetic as the
 * pure-Python PyWindowTable in rate_window.py, which is the reference and the fallback when
 * this module is not built. With limits on, every request is counted once or twice; in
 * Python that was a tenth of a token request's CPU, most of it the interpreter's own work
 * (see bench/RESULTS.md). tests/unit/test_rate_window.py holds the two to the same answers.
 *
 * A table maps a key to a slot: the window index floor(now / period), the requests counted
 * in the window before it and in it, and the period they were counted with (so a sweep
 * knows when each key's counts have all decayed, whatever rate counted them).
 *
 * Built with -ffp-contract=off: the float operations must round as Python's do, one by one.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

typedef struct {
    PyObject_HEAD
    double window;
    double period;
    long long previous;
    long long current;
} Slot;

static PyTypeObject SlotType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fluxer_oauth.core._window.Slot",
    .tp_basicsize = sizeof(Slot),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One key's counts (internal).",
};

typedef struct {
    PyObject_HEAD
    PyObject *slots; /* dict: key -> Slot */
    double next_sweep;
} WindowTable;

static PyObject *
table_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "WindowTable() takes no arguments");
        return NULL;
    }
    WindowTable *self = (WindowTable *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->slots = PyDict_New();
    if (self->slots == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->next_sweep = 0.0;
    return (PyObject *)self;
}

static void
table_dealloc(WindowTable *self)
{
    Py_XDECREF(self->slots);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Drops the keys whose counts have all decayed: the window after theirs has ended too. */
static int
sweep(WindowTable *self, double now)
{
    PyObject *stale = PyList_New(0);
    if (stale == NULL)
        return -1;
    Py_ssize_t position = 0;
    PyObject *key, *value;
    while (PyDict_Next(self->slots, &position, &key, &value)) {
        Slot *slot = (Slot *)value;
        if ((slot->window + 2.0) * slot->period <= now && PyList_Append(stale, key) < 0) {
            Py_DECREF(stale);
            return -1;
        }
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(stale); i++) {
        if (PyDict_DelItem(self->slots, PyList_GET_ITEM(stale, i)) < 0) {
            Py_DECREF(stale);
            return -1;
        }
    }
    Py_DECREF(stale);
    return 0;
}

/* The key's slot moved to the window of ``now`` (made on first use); a borrowed reference. */
static Slot *
slot_at(WindowTable *self, PyObject *key, double period, double now)
{
    if (now >= self->next_sweep) {
        if (sweep(self, now) < 0)
            return NULL;
        self->next_sweep = now + period;
    }
    Slot *slot = (Slot *)PyDict_GetItemWithError(self->slots, key);
    if (slot == NULL) {
        if (PyErr_Occurred())
            return NULL;
        slot = PyObject_New(Slot, &SlotType);
        if (slot == NULL)
            return NULL;
        slot->window = -1.0;
        slot->previous = 0;
        slot->current = 0;
        int failed = PyDict_SetItem(self->slots, key, (PyObject *)slot);
        Py_DECREF(slot); /* the dict holds it */
        if (failed < 0)
            return NULL;
    }
    slot->period = period;
    double window = floor(now / period);
    if (slot->window != window) {
        slot->previous = slot->window == window - 1.0 ? slot->current : 0;
        slot->current = 0;
        slot->window = window;
    }
    return slot;
}

/* hit()'s and step()'s first arguments: key, amount, period, now. */
static int
parse_arguments(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t expected, const char *usage,
                long long *amount, double *period, double *now)
{
    if (nargs != expected) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    *amount = PyLong_AsLongLong(args[1]);
    if (*amount == -1 && PyErr_Occurred())
        return -1;
    *period = PyFloat_AsDouble(args[2]);
    if (*period == -1.0 && PyErr_Occurred())
        return -1;
    if (!(*period > 0.0)) {
        PyErr_SetString(PyExc_ValueError, "the period must be positive");
        return -1;
    }
    *now = PyFloat_AsDouble(args[3]);
    if (*now == -1.0 && PyErr_Occurred())
        return -1;
    return 0;
}

PyDoc_STRVAR(hit_doc,
"hit(key, amount, period, now) -> (remaining, reset_at) | None\n\n"
"Count one request of key when it fits under amount per period: how many more fit, and when\n"
"the window ends. None when it does not fit (and nothing is counted).");

static PyObject *
table_hit(WindowTable *self, PyObject *const *args, Py_ssize_t nargs)
{
    long long amount;
    double period, now;
    if (parse_arguments(args, nargs, 4, "hit() takes key, amount, period and now", &amount, &period, &now) < 0)
        return NULL;
    Slot *slot = slot_at(self, args[0], period, now);
    if (slot == NULL)
        return NULL;
    double elapsed = now - slot->window * period;
    double weight = 1.0 - elapsed / period;
    if ((double)slot->previous * weight + (double)slot->current + 1.0 > (double)amount)
        Py_RETURN_NONE;
    slot->current += 1;
    double remaining = floor((double)amount - ((double)slot->previous * weight + (double)slot->current));
    return Py_BuildValue("(Ld)", remaining > 0.0 ? (long long)remaining : 0LL, now + period - elapsed);
}

PyDoc_STRVAR(step_doc,
"step(key, amount, period, now, cost) -> (allowed, previous, current, elapsed)\n\n"
"Count cost requests of key when they fit (cost 0 only asks); the counts after the step and\n"
"the seconds elapsed in the window.");

static PyObject *
table_step(WindowTable *self, PyObject *const *args, Py_ssize_t nargs)
{
    long long amount, cost;
    double period, now;
    if (parse_arguments(args, nargs, 5, "step() takes key, amount, period, now and cost", &amount, &period, &now) < 0)
        return NULL;
    cost = PyLong_AsLongLong(args[4]);
    if (cost == -1 && PyErr_Occurred())
        return NULL;
    if (cost < 0) {
        PyErr_SetString(PyExc_ValueError, "the cost cannot be negative");
        return NULL;
    }
    Slot *slot = slot_at(self, args[0], period, now);
    if (slot == NULL)
        return NULL;
    double elapsed = now - slot->window * period;
    double asked = cost ? (double)cost : 1.0;
    int allowed = (double)slot->previous * (1.0 - elapsed / period) + (double)slot->current + asked <= (double)amount;
    if (allowed)
        slot->current += cost;
    return Py_BuildValue("(NLLd)", PyBool_FromLong(allowed), slot->previous, slot->current, elapsed);
}

static Py_ssize_t
table_length(WindowTable *self)
{
    return PyDict_GET_SIZE(self->slots);
}

static PyMethodDef table_methods[] = {
    {"hit", (PyCFunction)(void (*)(void))table_hit, METH_FASTCALL, hit_doc},
    {"step", (PyCFunction)(void (*)(void))table_step, METH_FASTCALL, step_doc},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods table_as_sequence = {
    .sq_length = (lenfunc)table_length,
};

static PyTypeObject WindowTableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fluxer_oauth.core._window.WindowTable",
    .tp_basicsize = sizeof(WindowTable),
    .tp_dealloc = (destructor)table_dealloc,
    .tp_as_sequence = &table_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The sliding-window counters of one bucket: key -> counts (see rate_window.py).",
    .tp_methods = table_methods,
    .tp_new = table_new,
};

static struct PyModuleDef window_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "fluxer_oauth.core._window",
    .m_doc = "Compiled in-memory rate-limit counters (the reference is rate_window.PyWindowTable).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__window(void)
{
    if (PyType_Ready(&SlotType) < 0 || PyType_Ready(&WindowTableType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&window_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&WindowTableType);
    if (PyModule_AddObject(module, "WindowTable", (PyObject *)&WindowTableType) < 0) {
        Py_DECREF(&WindowTableType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
