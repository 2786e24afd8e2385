//! Bedrock ARNs, read as far as pricing needs: which kind of resource, and its id.

/// The parts of a Bedrock ARN that pricing cares about.
pub(super) struct Arn<'a> {
    pub(super) resource_type: &'a str,
    pub(super) resource_id: &'a str,
}

impl<'a> Arn<'a> {
    /// `arn:PARTITION:bedrock:REGION:ACCOUNT:TYPE/ID`; the id may contain `:`.
    /// Foundation-model ARNs have an empty account.
    pub(super) fn parse(s: &'a str) -> Option<Arn<'a>> {
        let mut parts = s.splitn(6, ':');
        let (arn, partition, service, region, _account, resource) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        if arn != "arn" || !partition.starts_with("aws") || service != "bedrock" || region.is_empty() {
            return None;
        }
        let (resource_type, resource_id) = resource.split_once('/')?;
        (!resource_type.is_empty() && !resource_id.is_empty()).then_some(Arn {
            resource_type,
            resource_id,
        })
    }
}

/// Whether `id` is an application inference profile ARN: a resource of one
/// account, whose cost allocation and quotas belong to whoever created it.
pub fn is_application_profile(id: &str) -> bool {
    Arn::parse(id).is_some_and(|a| a.resource_type == "application-inference-profile")
}
