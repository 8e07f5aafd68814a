/* Batched datagram I/O for the UDP listener: recvmmsg and sendmmsg (Linux).
 *
 * The standard library has no binding for them, and one recvfrom plus one
 * sendto per query through CPython's socket module were most of the time of
 * a cached answer (py-spy): a system call each way, a sockaddr decoded into a
 * tuple and encoded back. Here a reader wake-up costs one recvmmsg for up to
 * MAX_BATCH datagrams and one sendmmsg for their answers, and addresses stay
 * the kernel's raw sockaddr bytes (decoded in Python only where needed).
 *
 * Both calls are for a non-blocking socket and hold the GIL: they never
 * wait, and holding it is what makes the static buffers below safe.
 * gateway/server/batchio.py is the Python face; without this module the
 * listener uses its pure-Python loop.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

/* Datagrams per call; the listener's batch is at most this. */
#define MAX_BATCH 64
/* Largest datagram read: no UDP payload is larger, so nothing is cut. */
#define DATAGRAM_MAX 65535

/* Receive buffers, allocated on first use. Untouched pages of the large
 * allocation are never made resident: a DNS query touches its first page. */
static char *recv_buffers = NULL;
static struct mmsghdr recv_msgs[MAX_BATCH];
static struct iovec recv_iovs[MAX_BATCH];
static struct sockaddr_storage recv_addrs[MAX_BATCH];

static struct mmsghdr send_msgs[MAX_BATCH];
static struct iovec send_iovs[MAX_BATCH];
static Py_ssize_t send_index[MAX_BATCH];

static int
would_block(int err)
{
    return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

PyDoc_STRVAR(recv_doc,
"recv(fd, count) -> (datagrams, addresses)\n\n"
"Up to count (1..MAX_BATCH) datagrams waiting on the non-blocking socket fd,\n"
"and the raw sockaddr bytes of each sender. Nothing waiting: two empty lists.\n"
"Other errors (e.g. an ICMP error queued on the socket) raise OSError.");

static PyObject *
batch_recv(PyObject *self, PyObject *args)
{
    int fd, count;
    if (!PyArg_ParseTuple(args, "ii:recv", &fd, &count))
        return NULL;
    if (count < 1 || count > MAX_BATCH) {
        PyErr_Format(PyExc_ValueError, "count must be 1..%d", MAX_BATCH);
        return NULL;
    }
    if (recv_buffers == NULL) {
        recv_buffers = PyMem_RawMalloc((size_t)MAX_BATCH * DATAGRAM_MAX);
        if (recv_buffers == NULL)
            return PyErr_NoMemory();
    }
    for (int i = 0; i < count; i++) {
        recv_iovs[i].iov_base = recv_buffers + (size_t)i * DATAGRAM_MAX;
        recv_iovs[i].iov_len = DATAGRAM_MAX;
        struct msghdr *h = &recv_msgs[i].msg_hdr;
        h->msg_name = &recv_addrs[i];
        h->msg_namelen = sizeof(recv_addrs[i]);
        h->msg_iov = &recv_iovs[i];
        h->msg_iovlen = 1;
        h->msg_control = NULL;
        h->msg_controllen = 0;
        h->msg_flags = 0;
    }
    int n = recvmmsg(fd, recv_msgs, (unsigned int)count, MSG_DONTWAIT, NULL);
    if (n < 0) {
        if (would_block(errno))
            n = 0;  /* a signal or nothing left: the next wake-up reads on */
        else
            return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *datagrams = PyList_New(n);
    PyObject *addresses = PyList_New(n);
    if (datagrams == NULL || addresses == NULL)
        goto fail;
    for (int i = 0; i < n; i++) {
        PyObject *data = PyBytes_FromStringAndSize(
            recv_iovs[i].iov_base, (Py_ssize_t)recv_msgs[i].msg_len);
        if (data == NULL)
            goto fail;
        PyList_SET_ITEM(datagrams, i, data);
        PyObject *addr = PyBytes_FromStringAndSize(
            (const char *)&recv_addrs[i], (Py_ssize_t)recv_msgs[i].msg_hdr.msg_namelen);
        if (addr == NULL)
            goto fail;
        PyList_SET_ITEM(addresses, i, addr);
    }
    PyObject *result = PyTuple_Pack(2, datagrams, addresses);
    Py_DECREF(datagrams);
    Py_DECREF(addresses);
    return result;
fail:
    Py_XDECREF(datagrams);
    Py_XDECREF(addresses);
    return NULL;
}

static int
add_failure(PyObject **failures, Py_ssize_t index, int err)
{
    if (*failures == NULL) {
        *failures = PyList_New(0);
        if (*failures == NULL)
            return -1;
    }
    PyObject *item = Py_BuildValue("(ni)", index, err);
    if (item == NULL)
        return -1;
    int rc = PyList_Append(*failures, item);
    Py_DECREF(item);
    return rc;
}

PyDoc_STRVAR(send_doc,
"send(fd, replies, addresses) -> (skipped, failures)\n\n"
"Sends replies[i] to the raw sockaddr addresses[i] for every i whose reply is\n"
"not None, in sendmmsg calls of up to MAX_BATCH. skipped: how many replies were\n"
"None. failures: None when every reply went out, else a list of (i, errno) for\n"
"those that did not: EAGAIN for every reply left when the socket buffer is full\n"
"(the clients retry), the kernel's error for a reply it refused (the others\n"
"still go).");

static PyObject *
batch_send(PyObject *self, PyObject *args)
{
    int fd;
    PyObject *replies, *addresses;
    if (!PyArg_ParseTuple(args, "iO!O!:send", &fd, &PyList_Type, &replies, &PyList_Type,
                          &addresses))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(replies);
    if (PyList_GET_SIZE(addresses) < n) {
        PyErr_SetString(PyExc_ValueError, "fewer addresses than replies");
        return NULL;
    }
    Py_ssize_t skipped = 0;
    PyObject *failures = NULL;
    Py_ssize_t i = 0;
    /* No Python code runs below (only the lists are read), so the lists and
     * the bytes they hold cannot change while the kernel reads them. */
    while (i < n) {
        int m = 0;
        for (; i < n && m < MAX_BATCH; i++) {
            PyObject *reply = PyList_GET_ITEM(replies, i);
            if (reply == Py_None) {
                skipped++;
                continue;
            }
            PyObject *addr = PyList_GET_ITEM(addresses, i);
            if (!PyBytes_Check(reply) || !PyBytes_Check(addr)) {
                PyErr_SetString(PyExc_TypeError, "replies and addresses must be bytes");
                goto fail;
            }
            Py_ssize_t addrlen = PyBytes_GET_SIZE(addr);
            if (addrlen > (Py_ssize_t)sizeof(struct sockaddr_storage)) {
                PyErr_SetString(PyExc_ValueError, "address longer than a sockaddr");
                goto fail;
            }
            send_iovs[m].iov_base = PyBytes_AS_STRING(reply);
            send_iovs[m].iov_len = (size_t)PyBytes_GET_SIZE(reply);
            struct msghdr *h = &send_msgs[m].msg_hdr;
            h->msg_name = PyBytes_AS_STRING(addr);
            h->msg_namelen = (socklen_t)addrlen;
            h->msg_iov = &send_iovs[m];
            h->msg_iovlen = 1;
            h->msg_control = NULL;
            h->msg_controllen = 0;
            h->msg_flags = 0;
            send_index[m] = i;
            m++;
        }
        int k = 0;
        while (k < m) {
            int sent = sendmmsg(fd, send_msgs + k, (unsigned int)(m - k), MSG_DONTWAIT);
            if (sent > 0) {
                /* Partial: the kernel stopped at a message; the next call
                 * sends it or reports its error. */
                k += sent;
                continue;
            }
            int err = sent < 0 ? errno : EAGAIN;
            if (err == EAGAIN || err == EWOULDBLOCK) {
                /* Socket buffer full: the rest would fail the same way. */
                for (; k < m; k++)
                    if (add_failure(&failures, send_index[k], EAGAIN) < 0)
                        goto fail;
                for (; i < n; i++)
                    if (PyList_GET_ITEM(replies, i) != Py_None) {
                        if (add_failure(&failures, i, EAGAIN) < 0)
                            goto fail;
                    } else {
                        skipped++;
                    }
                break;
            }
            /* This message was refused (EMSGSIZE, EINVAL for a port-zero
             * or bad address, ECONNREFUSED from a queued ICMP error, a
             * signal...): report it and go on with the next one. */
            if (add_failure(&failures, send_index[k], err) < 0)
                goto fail;
            k++;
        }
    }
    PyObject *result = Py_BuildValue("(nO)", skipped, failures ? failures : Py_None);
    Py_XDECREF(failures);
    return result;
fail:
    Py_XDECREF(failures);
    return NULL;
}

static PyMethodDef methods[] = {
    {"recv", batch_recv, METH_VARARGS, recv_doc},
    {"send", batch_send, METH_VARARGS, send_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_batchio",
    .m_doc = "recvmmsg/sendmmsg for the UDP listener (see gateway/server/batchio.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__batchio(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "MAX_BATCH", MAX_BATCH) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
