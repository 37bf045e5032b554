//! Envoy-style response flags for access logs.

#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, Hash)]
pub struct Flags(u16);

impl Flags {
    pub const NO_ROUTE: Flags = Flags(1);
    pub const NO_HEALTHY_UPSTREAM: Flags = Flags(1 << 1);
    pub const UPSTREAM_CONNECT_FAILURE: Flags = Flags(1 << 2);
    pub const UPSTREAM_RESET: Flags = Flags(1 << 3);
    pub const UPSTREAM_TIMEOUT: Flags = Flags(1 << 4);
    pub const UPSTREAM_OVERFLOW: Flags = Flags(1 << 5);
    pub const RETRY_LIMIT: Flags = Flags(1 << 6);
    pub const DELAY_INJECTED: Flags = Flags(1 << 7);
    pub const FAULT_INJECTED: Flags = Flags(1 << 8);
    pub const DOWNSTREAM_ERROR: Flags = Flags(1 << 9);
    pub const RBAC_DENIED: Flags = Flags(1 << 10);

    const NAMES: [(Flags, &'static str); 11] = [
        (Flags::NO_ROUTE, "NR"),
        (Flags::NO_HEALTHY_UPSTREAM, "UH"),
        (Flags::UPSTREAM_CONNECT_FAILURE, "UF"),
        (Flags::UPSTREAM_RESET, "UC"),
        (Flags::UPSTREAM_TIMEOUT, "UT"),
        (Flags::UPSTREAM_OVERFLOW, "UO"),
        (Flags::RETRY_LIMIT, "URX"),
        (Flags::DELAY_INJECTED, "DI"),
        (Flags::FAULT_INJECTED, "FI"),
        (Flags::DOWNSTREAM_ERROR, "DPE"),
        (Flags::RBAC_DENIED, "RBAC"),
    ];

    pub fn set(&mut self, f: Flags) {
        self.0 |= f.0;
    }

    /// Envoy's text: `-` for none, the codes comma-separated (a copy only for two or
    /// more, which only failing requests carry).
    pub fn render(self) -> std::borrow::Cow<'static, str> {
        let mut names = Self::NAMES
            .iter()
            .filter(|(f, _)| self.0 & f.0 != 0)
            .map(|(_, n)| *n);
        let Some(first) = names.next() else {
            return "-".into();
        };
        match names.next() {
            None => first.into(),
            Some(second) => [first, second]
                .into_iter()
                .chain(names)
                .collect::<Vec<_>>()
                .join(",")
                .into(),
        }
    }
}
