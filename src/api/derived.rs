//! Derived fields: the fields the idl marks `derived=RULE(REF_FIELD)`,
//! computed by one provider per rule and stored by one trigger,
//! [`catch_up`]: the host's change token (the boot configuration's and
//! `/proc/cmdline`'s fingerprints) moved since they were last computed.
//! The change watch runs it on every tick, an edit's commit forces it,
//! and a read of a class with derived fields runs it first, so a hand
//! edit shows at once; a read that finds the token where it was writes
//! nothing, and a status read never writes. No class is special-cased
//! anywhere else.

use crate::api::context::Context;
use crate::api::{ApiError, Value};
use crate::domain::PciAddress;
use crate::idl::{self, Class, Derived, Field};
use crate::store::{Change, Object};

/// A rule: the new value of `field` for each object of `objects`, given
/// the objects their `derived.from` field points at.
type Provider = fn(&Context, &[(&Object, Option<&Object>)]) -> Result<Vec<Value>, ApiError>;

/// Every rule the idl may name.
const PROVIDERS: &[(&str, Provider)] = &[("dom0_access_status", dom0_access_status)];

fn provider(rule: &str) -> Option<Provider> {
    PROVIDERS.iter().find(|(r, _)| *r == rule).map(|(_, p)| *p)
}

/// `dom0_access_status(PCI)`: the live dom0 access status of the PCI,
/// from one read of the boot configuration for all objects.
fn dom0_access_status(
    ctx: &Context,
    objects: &[(&Object, Option<&Object>)],
) -> Result<Vec<Value>, ApiError> {
    let addrs: Vec<Option<PciAddress>> = objects
        .iter()
        .map(|(_, source)| source.and_then(|s| s.get_str("pci_id").parse().ok()))
        .collect();
    let known: Vec<PciAddress> = addrs.iter().flatten().copied().collect();
    let mut statuses = ctx.host.statuses(&known)?.into_iter();
    Ok(addrs
        .iter()
        .map(|a| match a {
            Some(_) => statuses
                .next()
                .map_or(Value::Nil, |s| Value::str(s.as_str())),
            None => Value::Nil,
        })
        .collect())
}

/// Bring every derived field up to date if the host changed since they
/// were last computed; whether they were recomputed. One caller at a
/// time: the others wait for its result instead of reading the host
/// again.
pub fn catch_up(ctx: &Context) -> bool {
    update(ctx, false)
}

/// Recompute every derived field now (an edit was just committed, or the
/// objects were just synchronised with the host).
pub fn recompute(ctx: &Context) {
    update(ctx, true);
}

/// Whether `class` has derived fields (reads of other classes need no
/// [`catch_up`]).
pub fn has_derived(class: &str) -> bool {
    idl::datamodel()
        .class(class)
        .is_some_and(|c| c.derived_fields().next().is_some())
}

fn update(ctx: &Context, force: bool) -> bool {
    let mut at = ctx
        .derived_at
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let now = ctx.host.changes();
    if !force && at.as_ref() == Some(&now) {
        return false;
    }
    if !force && at.is_some() {
        tracing::info!("boot configuration or /proc/cmdline changed; derived fields recomputed");
    }
    let mut complete = true;
    for class in &idl::datamodel().classes {
        for (field, derived) in class.derived_fields() {
            if let Err(e) = refresh_field(ctx, class, field, derived) {
                complete = false;
                tracing::warn!(class = %class.name, field = %field.name, "derived field not refreshed: {e}");
            }
        }
    }
    // A rule that could not be computed (an unreadable boot configuration)
    // left its stored values alone and is tried again at the next look.
    *at = complete.then_some(now);
    true
}

fn refresh_field(
    ctx: &Context,
    class: &Class,
    field: &Field,
    derived: &Derived,
) -> Result<(), ApiError> {
    let objects = ctx.store.all(&class.name);
    if objects.is_empty() {
        return Ok(());
    }
    let Some(provider) = provider(&derived.rule) else {
        return Err(ApiError::Internal(format!(
            "no provider for rule {}",
            derived.rule
        )));
    };
    let sources: Vec<Option<std::sync::Arc<Object>>> = objects
        .iter()
        .map(|o| ctx.store.get(o.get_str(&derived.from)))
        .collect();
    let pairs: Vec<(&Object, Option<&Object>)> = objects
        .iter()
        .zip(&sources)
        .map(|(o, s)| (&**o, s.as_deref()))
        .collect();
    let values = provider(ctx, &pairs)?;
    let changes: Vec<Change> = objects
        .iter()
        .zip(values)
        .filter(|(o, v)| *v != Value::Nil && o.get(&field.name) != Some(v))
        .map(|(o, v)| Change::Update {
            reference: o.reference.clone(),
            fields: vec![(field.name.clone(), v)],
        })
        .collect();
    if !changes.is_empty() {
        ctx.apply(changes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_the_idl_names_has_a_provider() {
        let mut rules = 0;
        for class in &idl::datamodel().classes {
            for (field, derived) in class.derived_fields() {
                rules += 1;
                assert!(
                    provider(&derived.rule).is_some(),
                    "{}.{}: no provider for {}",
                    class.name,
                    field.name,
                    derived.rule
                );
                let from = class.fields.iter().find(|f| f.name == derived.from);
                assert!(
                    from.is_some(),
                    "{}.{}: no field {}",
                    class.name,
                    field.name,
                    derived.from
                );
            }
        }
        assert!(rules > 0, "PGPU.dom0_access is derived");
    }
}
