// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
//
// Same-host TCP/IP bypass for the mesh.
//
// `trellis_sockops` runs for TCP sockets of processes in the mesh's cgroup. When a
// connection is established it records the socket in `trellis_socks`, keyed by the
// socket's own tuple (local address and port, remote address and port). The kernel
// removes it from the map when its owner closes it.
//
// `trellis_sk_msg` runs on every send of a recorded socket. The peer of a local
// connection is recorded under the mirrored tuple; when it is there, the data goes
// straight onto the peer's receive queue and skips TCP, IP and loopback. When it is not
// (a remote peer, or a local process outside the cgroup) the send takes the normal path.
//
// Dual-licensed GPL-compatible: the socket-map helpers are GPL-only.

#include <linux/bpf.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define AF_INET 2
#define AF_INET6 10
#define TCP_CLOSE 7

// Both programs build the key the same way: ports as 16-bit network-order values,
// IPv4 in addr[0] with the rest zero, and IPv4-mapped IPv6 folded into IPv4 so a
// dual-stack socket meets its IPv4 peer.
struct sock_key {
	__u32 family;
	__u32 local_port;
	__u32 remote_port;
	__u32 local_addr[4];
	__u32 remote_addr[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, struct sock_key);
	__type(value, __u32); // a socket; user space sees its descriptor
} trellis_socks SEC(".maps");

// Sockets whose sends have taken the normal path once. They never switch to the
// redirect: the peer reads its TCP receive queue and its redirected messages from two
// queues, and data sent both ways could be read out of order. It happens when a client
// sends before the server's end of the connection is recorded (a race at accept).
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sock_key);
	__type(value, __u8);
} trellis_passed SEC(".maps");

// Index into trellis_counters; the loader reads them by the same numbers.
enum counter {
	SOCKETS_ADDED = 0,
	SOCKETS_CLOSED = 1,
	SOCKETS_ADD_FAILED = 2,
	MSGS_REDIRECTED = 3,
	BYTES_REDIRECTED = 4,
	MSGS_PASSED = 5,
	BYTES_PASSED = 6,
	COUNTERS = 7,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} trellis_counters SEC(".maps");

// Written once by the loader: the cgroup this instance serves, for `status`.
struct info {
	char cgroup[4096];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct info);
} trellis_info SEC(".maps");

static __always_inline void count(__u32 index, __u64 by)
{
	__u64 *value = bpf_map_lookup_elem(&trellis_counters, &index);
	if (value)
		*value += by;
}

static __always_inline int is_v4_mapped(const __u32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff);
}

// The endpoints of a connection as both programs read them from their contexts.
struct tuple {
	__u32 family;
	__u32 local_port;  // host order, as the contexts give it
	__u32 remote_port; // network order in the upper 16 bits, as the contexts give it
	__u32 local_ip4, remote_ip4;
	__u32 local_ip6[4], remote_ip6[4];
};

static __always_inline int tuple_key(const struct tuple *t, struct sock_key *key)
{
	__builtin_memset(key, 0, sizeof(*key));
	key->local_port = bpf_htonl(t->local_port) >> 16;
	key->remote_port = t->remote_port >> 16;
	if (t->family == AF_INET) {
		key->family = AF_INET;
		key->local_addr[0] = t->local_ip4;
		key->remote_addr[0] = t->remote_ip4;
		return 0;
	}
	if (t->family != AF_INET6)
		return -1;
	if (is_v4_mapped(t->local_ip6) && is_v4_mapped(t->remote_ip6)) {
		key->family = AF_INET;
		key->local_addr[0] = t->local_ip6[3];
		key->remote_addr[0] = t->remote_ip6[3];
		return 0;
	}
	key->family = AF_INET6;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		key->local_addr[i] = t->local_ip6[i];
		key->remote_addr[i] = t->remote_ip6[i];
	}
	return 0;
}

// The two context types have the same fields under the same names; each field is
// loaded directly from the context, as the verifier requires.
#define READ_TUPLE(ctx, t)                                                                 \
	do {                                                                               \
		(t)->family = (ctx)->family;                                               \
		(t)->local_port = (ctx)->local_port;                                       \
		(t)->remote_port = (ctx)->remote_port;                                     \
		(t)->local_ip4 = (ctx)->local_ip4;                                         \
		(t)->remote_ip4 = (ctx)->remote_ip4;                                       \
		(t)->local_ip6[0] = (ctx)->local_ip6[0];                                   \
		(t)->local_ip6[1] = (ctx)->local_ip6[1];                                   \
		(t)->local_ip6[2] = (ctx)->local_ip6[2];                                   \
		(t)->local_ip6[3] = (ctx)->local_ip6[3];                                   \
		(t)->remote_ip6[0] = (ctx)->remote_ip6[0];                                 \
		(t)->remote_ip6[1] = (ctx)->remote_ip6[1];                                 \
		(t)->remote_ip6[2] = (ctx)->remote_ip6[2];                                 \
		(t)->remote_ip6[3] = (ctx)->remote_ip6[3];                                 \
	} while (0)

static __always_inline int sockops_key(struct bpf_sock_ops *ops, struct sock_key *key)
{
	struct tuple t;

	READ_TUPLE(ops, &t);
	return tuple_key(&t, key);
}

SEC("sockops")
int trellis_sockops(struct bpf_sock_ops *ops)
{
	struct sock_key key;

	switch (ops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		if (sockops_key(ops, &key))
			break;
		if (bpf_sock_hash_update(ops, &trellis_socks, &key, BPF_NOEXIST) == 0) {
			count(SOCKETS_ADDED, 1);
			// Ask for state changes so the close below is seen.
			bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags |
							       BPF_SOCK_OPS_STATE_CB_FLAG);
		} else {
			count(SOCKETS_ADD_FAILED, 1);
		}
		break;
	case BPF_SOCK_OPS_STATE_CB:
		// args[1] is the new state. Only recorded sockets asked for this callback.
		// The socket stays in trellis_socks: the kernel removes it when its owner
		// closes it. Deleting it here would free its queue of redirected data that
		// the owner has not read yet: a socket that half-closed first reaches CLOSE
		// (TIME_WAIT) as soon as the peer's FIN arrives, possibly long before it has
		// read everything the peer sent.
		if (ops->args[1] != TCP_CLOSE)
			break;
		if (sockops_key(ops, &key))
			break;
		bpf_map_delete_elem(&trellis_passed, &key);
		count(SOCKETS_CLOSED, 1);
		break;
	}
	return 1;
}

static __always_inline int sk_msg_key(struct sk_msg_md *msg, struct sock_key *key)
{
	struct tuple t;

	READ_TUPLE(msg, &t);
	return tuple_key(&t, key);
}

SEC("sk_msg")
int trellis_sk_msg(struct sk_msg_md *msg)
{
	struct sock_key own, peer;
	__u8 yes = 1;

	if (sk_msg_key(msg, &own))
		goto pass;
	if (bpf_map_lookup_elem(&trellis_passed, &own))
		goto pass;
	// The peer's own tuple is this socket's tuple mirrored.
	peer.family = own.family;
	peer.local_port = own.remote_port;
	peer.remote_port = own.local_port;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		peer.local_addr[i] = own.remote_addr[i];
		peer.remote_addr[i] = own.local_addr[i];
	}

	// On success the helper returns SK_PASS with the redirect recorded; when the peer
	// is not in the map it returns SK_DROP and records nothing. Either way SK_PASS is
	// returned below, so a send to an untracked peer takes the normal path instead of
	// being dropped.
	if (bpf_msg_redirect_hash(msg, &trellis_socks, &peer, BPF_F_INGRESS) == SK_PASS) {
		count(MSGS_REDIRECTED, 1);
		count(BYTES_REDIRECTED, msg->size);
		return SK_PASS;
	}
	bpf_map_update_elem(&trellis_passed, &own, &yes, BPF_ANY);
pass:
	count(MSGS_PASSED, 1);
	count(BYTES_PASSED, msg->size);
	return SK_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";
