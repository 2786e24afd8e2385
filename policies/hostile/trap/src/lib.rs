//! Traps (a panic, which is `unreachable` under panic=abort).

use tollgate_policy::*;

struct Trap;

impl Policy for Trap {
    fn decide(request: &Request, _state: &TenantState) -> Verdict {
        if request.now_ms != u64::MAX {
            panic!("policy bug: index {} out of range", request.now_ms);
        }
        Verdict::admit("unreachable")
    }
}

export_policy!(Trap);
