//! `SessionIndex`: which phones exist and who owns them, without asking
//! any actor.
//!
//! Listing a tenant's sessions must cost O(its own sessions), not O(every
//! phone on the node), and must not start an actor per phone. The index is
//! built at boot from the records on disk and updated by the one writer of
//! each record, the phone's actor, right after the record is written; so it
//! says what the records say. It holds no session state: a live session's
//! view comes from its actor (`SessionHandle::current_view`).

use std::collections::{BTreeSet, HashMap};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::core::record::{DesiredState, PhoneRecord};
use crate::core::tenant::{Caller, TenantId};
use crate::phone::Phone;
use crate::session::SessionView;

/// What the index knows of one phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub owner: Option<TenantId>,
    /// `None` for files found without a record (an orphan).
    pub desired: Option<DesiredState>,
    /// Messages waiting in the outbox when boot read it; a phone with a
    /// live actor reports its own count instead.
    pub pending_at_boot: usize,
}

impl IndexEntry {
    /// The session as the API shows it when no actor holds it: nothing runs.
    pub fn view_at_rest(&self, phone: &Phone) -> SessionView {
        let status = match self.desired {
            // Boot is about to resume it.
            Some(DesiredState::Running) => "starting",
            Some(DesiredState::LoggedOut) => "logged_out",
            Some(DesiredState::Cleared) => "cleared",
            Some(DesiredState::Stopped) | None => "stopped",
        };
        SessionView {
            phone: phone.clone(),
            owner: self.owner.clone(),
            status,
            ready: false,
            me: None,
            last_error: None,
            qr: None,
            pending_messages: self.pending_at_boot,
        }
    }

    /// Listed: a record that is not a reset's tombstone.
    fn listed(&self) -> bool {
        matches!(self.desired, Some(d) if d != DesiredState::Cleared)
    }
}

#[derive(Default)]
struct Inner {
    phones: HashMap<Phone, IndexEntry>,
    by_owner: HashMap<Option<TenantId>, BTreeSet<Phone>>,
    /// Creates under way, by tenant: counted with its sessions, so that
    /// concurrent creates cannot pass the tenant's limit together.
    creating: HashMap<TenantId, usize>,
}

/// Room for one more session of a tenant, held by a create until its
/// record is written (and indexed); dropping it gives the room back.
pub struct SessionSlot<'a> {
    index: &'a SessionIndex,
    tenant: TenantId,
}

impl Drop for SessionSlot<'_> {
    fn drop(&mut self) {
        let mut inner = self.index.write();
        if let Some(n) = inner.creating.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                inner.creating.remove(&self.tenant);
            }
        }
    }
}

#[derive(Default)]
pub struct SessionIndex {
    inner: RwLock<Inner>,
}

impl SessionIndex {
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // Every update is a few map operations that cannot leave the maps
        // half-changed in a way a reader could trip on.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn put(&self, phone: &Phone, owner: Option<TenantId>, desired: Option<DesiredState>) {
        let mut inner = self.write();
        let entry = inner.phones.entry(phone.clone()).or_insert(IndexEntry {
            owner: owner.clone(),
            desired,
            pending_at_boot: 0,
        });
        let previous_owner = std::mem::replace(&mut entry.owner, owner.clone());
        entry.desired = desired;
        if previous_owner != owner
            && let Some(set) = inner.by_owner.get_mut(&previous_owner)
        {
            set.remove(phone);
            if set.is_empty() {
                inner.by_owner.remove(&previous_owner);
            }
        }
        inner
            .by_owner
            .entry(owner)
            .or_default()
            .insert(phone.clone());
    }

    /// After a record of `phone` was written (or read at boot).
    pub fn record(&self, phone: &Phone, record: &PhoneRecord) {
        self.put(phone, record.owner.clone(), Some(record.desired));
    }

    /// Files of `phone` exist with no record (found at boot).
    pub fn orphan(&self, phone: &Phone) {
        self.put(phone, None, None);
    }

    /// What boot found waiting in `phone`'s outbox.
    pub fn set_pending_at_boot(&self, phone: &Phone, pending: usize) {
        if let Some(entry) = self.write().phones.get_mut(phone) {
            entry.pending_at_boot = pending;
        }
    }

    /// Reserves room for one more session of `tenant` if it owns fewer than
    /// `max` (counting creates under way); otherwise how many it has.
    pub fn reserve_session(&self, tenant: &TenantId, max: usize) -> Result<SessionSlot<'_>, usize> {
        let mut inner = self.write();
        let owned = inner
            .by_owner
            .get(&Some(tenant.clone()))
            .map(|set| {
                set.iter()
                    .filter(|p| inner.phones.get(*p).is_some_and(IndexEntry::listed))
                    .count()
            })
            .unwrap_or(0);
        let creating = inner.creating.get(tenant).copied().unwrap_or(0);
        if owned + creating >= max {
            return Err(owned + creating);
        }
        *inner.creating.entry(tenant.clone()).or_default() += 1;
        Ok(SessionSlot {
            index: self,
            tenant: tenant.clone(),
        })
    }

    pub fn get(&self, phone: &Phone) -> Option<IndexEntry> {
        self.read().phones.get(phone).cloned()
    }

    /// Whether the host has any record or file of `phone`.
    pub fn knows(&self, phone: &Phone) -> bool {
        self.read().phones.contains_key(phone)
    }

    pub fn len(&self) -> usize {
        self.read().phones.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The listed phones `caller` may see, in phone order: a tenant's own,
    /// or every owned phone for an operator.
    pub fn visible_to(&self, caller: &Caller) -> Vec<(Phone, IndexEntry)> {
        let inner = self.read();
        let pick = |phone: &Phone| {
            inner
                .phones
                .get(phone)
                .filter(|e| e.listed())
                .map(|e| (phone.clone(), e.clone()))
        };
        match caller.tenant() {
            Some(tenant) => inner
                .by_owner
                .get(&Some(tenant.clone()))
                .map(|set| set.iter().filter_map(pick).collect())
                .unwrap_or_default(),
            None => {
                let mut all: Vec<_> = inner
                    .phones
                    .iter()
                    .filter(|(_, e)| e.listed())
                    .map(|(p, e)| (p.clone(), e.clone()))
                    .collect();
                all.sort_by(|a, b| a.0.cmp(&b.0));
                all
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(raw: &str) -> Phone {
        Phone::parse(raw).unwrap()
    }

    fn tenant(raw: &str) -> TenantId {
        TenantId::parse(raw).unwrap()
    }

    fn record(owner: &str, desired: DesiredState) -> PhoneRecord {
        PhoneRecord::new(Some(tenant(owner)), desired, 0)
    }

    fn listed(index: &SessionIndex, caller: &Caller) -> Vec<String> {
        index
            .visible_to(caller)
            .into_iter()
            .map(|(p, _)| p.as_str().to_owned())
            .collect()
    }

    #[test]
    fn a_tenant_sees_its_own_listed_phones_and_an_operator_sees_every_owned_one() {
        let index = SessionIndex::default();
        index.record(
            &phone("51900000001"),
            &record("acme", DesiredState::Running),
        );
        index.record(
            &phone("51900000002"),
            &record("acme", DesiredState::Stopped),
        );
        index.record(
            &phone("51900000003"),
            &record("acme", DesiredState::Cleared),
        );
        index.record(
            &phone("51900000004"),
            &record("zeta", DesiredState::Running),
        );
        index.orphan(&phone("51900000005"));
        let acme = Caller::Tenant(tenant("acme"));
        assert_eq!(listed(&index, &acme), ["51900000001", "51900000002"]);
        assert_eq!(
            listed(&index, &Caller::Operator),
            ["51900000001", "51900000002", "51900000004"]
        );
        assert!(index.knows(&phone("51900000005")), "an orphan is known");
        assert!(!index.knows(&phone("51900000006")));
    }

    #[test]
    fn a_phone_cleared_and_created_by_another_tenant_moves_to_the_new_owner() {
        let index = SessionIndex::default();
        let p = phone("51900000001");
        index.record(&p, &record("acme", DesiredState::Running));
        index.record(&p, &record("acme", DesiredState::Cleared));
        index.record(&p, &record("zeta", DesiredState::Running));
        assert_eq!(
            listed(&index, &Caller::Tenant(tenant("acme"))),
            Vec::<String>::new()
        );
        assert_eq!(
            listed(&index, &Caller::Tenant(tenant("zeta"))),
            ["51900000001"]
        );
    }

    #[test]
    fn a_phone_at_rest_shows_what_its_record_says() {
        let entry = IndexEntry {
            owner: Some(tenant("acme")),
            desired: Some(DesiredState::LoggedOut),
            pending_at_boot: 2,
        };
        let view = entry.view_at_rest(&phone("51900000001"));
        assert_eq!(
            (view.status, view.ready, view.pending_messages),
            ("logged_out", false, 2)
        );
    }
}
