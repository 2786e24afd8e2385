//! Loops forever. The epoch deadline must stop it.

use tollgate_policy::*;

struct Spin;

impl Policy for Spin {
    fn decide(request: &Request, _state: &TenantState) -> Verdict {
        // Depends on the input and never reaches zero (always odd), so the
        // optimiser can neither fold nor drop it.
        let mut x = request.now_ms | 1;
        loop {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(2) | 1;
            if x == 0 {
                break;
            }
        }
        Verdict::admit(format!("unreachable {x}"))
    }
}

export_policy!(Spin);
