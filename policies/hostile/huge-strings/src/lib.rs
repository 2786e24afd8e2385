//! Returns a 1 MiB reason and a thousand metadata pairs. The host must
//! refuse the verdict rather than log or forward it.

use tollgate_policy::*;

struct HugeStrings;

impl Policy for HugeStrings {
    fn decide(_request: &Request, _state: &TenantState) -> Verdict {
        let mut verdict = Verdict::admit("x".repeat(1 << 20));
        verdict.metadata = (0..1_000).map(|i| (format!("k{i}"), String::new())).collect();
        verdict
    }
}

export_policy!(HugeStrings);
