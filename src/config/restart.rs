//! The settings a reload (SIGHUP) cannot change, because they are bound to
//! sockets, threads or privileges taken at start: declared once, in the
//! table below, from which [`Config::keep_restart_only`] is generated.

use super::Config;

/// Each line: the options (fields of [`Options`](super::Options), with the
/// name a warning gives them) and the fields of [`Config`] they set.
macro_rules! restart_only {
    ($($($name:literal $option:ident),+ => $($($field:ident).+),+;)*) => {
        /// Every restart-only option: its name and its field in
        /// [`Options`](super::Options).
        #[cfg(test)]
        pub(super) const RESTART_ONLY: &[(&str, &str)] =
            &[$($(($name, stringify!($option))),+),*];

        impl Config {
            /// Puts back the running value of every setting that needs a
            /// restart, and names the options the new configuration changed
            /// among them.
            pub fn keep_restart_only(&mut self, running: &Config) -> Vec<&'static str> {
                let mut changed = Vec::new();
                $(
                    let before = changed.len();
                    $(
                        if self.effective.$option != running.effective.$option {
                            changed.push($name);
                            self.effective.$option = running.effective.$option.clone();
                        }
                    )+
                    if changed.len() > before {
                        $(self.$($field).+ = running.$($field).+.clone();)+
                    }
                )*
                // Who may have names forwarded is printed only while forwarding.
                if self.forward.is_none() {
                    self.effective.forward_allow.clear();
                }
                changed
            }
        }
    };
}

restart_only! {
    "listen" listen => listen;
    "threads" threads, "cpus" cpus => cpus;
    "io" io => io;
    "metrics-listen" metrics_listen => metrics_listen;
    "user" user => user;
    "tcp-idle-timeout" tcp_idle_timeout, "tcp-max-connections" tcp_max_connections => tcp;
    "forward" forward, "forward-timeout" forward_timeout,
        "forward-max-outstanding" forward_max_outstanding => forward, zone.forwarding;
    "log-format" log_format => log_format;
    "log-level" log_level => log_level;
}
