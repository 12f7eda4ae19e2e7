//! The Prometheus text format (exposition format 0.0.4): the one writer of
//! metric lines. The engine's families (`stats.rs`), the protocol's
//! (`protocol/metrics.rs`, `protocol/http.rs`) and the cluster's
//! (`protocol/cluster/mod.rs`) all go through [`write_metric`].

use std::fmt::{Display, Write};

/// Appends one metric family: its `# HELP` and `# TYPE` lines, then a line
/// per sample (`labels` is empty or a `{name="value"}` set).
pub(crate) fn write_metric<V: Display>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: &[(String, V)],
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// Appends a family of one sample without labels.
pub(crate) fn write_one<V: Display>(out: &mut String, name: &str, kind: &str, help: &str, value: V) {
    write_metric(out, name, kind, help, &[(String::new(), value)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_is_help_type_then_its_samples() {
        let mut out = String::new();
        write_metric(
            &mut out,
            "x_total",
            "counter",
            "Xs.",
            &[("{r=\"a\"}".to_owned(), 1), ("{r=\"b\"}".to_owned(), 2)],
        );
        write_one(&mut out, "y", "gauge", "Y.", "0.500000");
        assert_eq!(
            out,
            "# HELP x_total Xs.\n# TYPE x_total counter\nx_total{r=\"a\"} 1\nx_total{r=\"b\"} 2\n\
             # HELP y Y.\n# TYPE y gauge\ny 0.500000\n"
        );
    }
}
