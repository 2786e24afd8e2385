//! The empty policy: admits every call. The floor of a policy call's cost,
//! and a safe fallback to hot-swap to.

use tollgate_policy::*;

struct AllowAll;

impl Policy for AllowAll {
    fn decide(_request: &Request, _state: &TenantState) -> Verdict {
        Verdict::admit("allow-all admits every call")
    }
}

export_policy!(AllowAll);
