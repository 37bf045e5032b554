use serde::Serialize;

/// The programs' counters, summed over CPUs. Indices match `enum counter` in
/// `bpf/bypass.c`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Sockets recorded at connection establishment.
    pub sockets_added: u64,
    /// Recorded sockets whose connection reached CLOSE. The kernel drops each from
    /// the map when its owner closes the descriptor.
    pub sockets_closed: u64,
    /// Sockets that could not be recorded (map full, or already present).
    pub sockets_add_failed: u64,
    /// Sends handed straight to a local peer socket.
    pub msgs_redirected: u64,
    pub bytes_redirected: u64,
    /// Sends of recorded sockets that took the normal path (peer not recorded).
    pub msgs_passed: u64,
    pub bytes_passed: u64,
}

impl Counters {
    pub(crate) const LEN: u32 = 7;

    pub(crate) fn from_slots(slots: &[u64]) -> Self {
        let at = |i: usize| slots.get(i).copied().unwrap_or(0);
        Counters {
            sockets_added: at(0),
            sockets_closed: at(1),
            sockets_add_failed: at(2),
            msgs_redirected: at(3),
            bytes_redirected: at(4),
            msgs_passed: at(5),
            bytes_passed: at(6),
        }
    }
}
