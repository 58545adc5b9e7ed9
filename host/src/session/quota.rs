//! `OutboxQuota`: what each tenant's phones hold in their outboxes
//! together, so that one tenant cannot fill the disk (or the memory, where
//! the queues of running sessions live) across many phones.
//!
//! Each phone's actor is the one writer of its phone's line (`set`); boot
//! sets the lines of phones that have no actor yet. A new message reserves
//! its room first (`reserve`, atomic across the tenant's phones), so that
//! concurrent enqueues on different phones cannot pass the limit together.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::core::outbox::{OutboxError, QueueLimits, QueueUsage};
use crate::core::tenant::TenantId;
use crate::phone::Phone;

#[derive(Default)]
struct Inner {
    phones: HashMap<Phone, (Option<TenantId>, QueueUsage)>,
    tenants: HashMap<TenantId, QueueUsage>,
}

#[derive(Default)]
pub struct OutboxQuota {
    inner: Mutex<Inner>,
}

impl Inner {
    fn tenant_mut(&mut self, tenant: &TenantId) -> &mut QueueUsage {
        self.tenants.entry(tenant.clone()).or_default()
    }

    fn set(&mut self, phone: &Phone, owner: Option<&TenantId>, usage: QueueUsage) {
        if let Some((Some(was_owner), was)) = self.phones.remove(phone) {
            let total = self.tenant_mut(&was_owner);
            total.messages = total.messages.saturating_sub(was.messages);
            total.bytes = total.bytes.saturating_sub(was.bytes);
            if *total == QueueUsage::default() {
                self.tenants.remove(&was_owner);
            }
        }
        if usage == QueueUsage::default() {
            return;
        }
        if let Some(owner) = owner {
            let total = self.tenant_mut(owner);
            total.messages += usage.messages;
            total.bytes += usage.bytes;
        }
        self.phones.insert(phone.clone(), (owner.cloned(), usage));
    }
}

impl OutboxQuota {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves the maps whole; a panic elsewhere cannot tear them.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `phone` (owned by `owner`) holds `usage` now.
    pub fn set(&self, phone: &Phone, owner: Option<&TenantId>, usage: QueueUsage) {
        self.lock().set(phone, owner, usage);
    }

    /// Reserves room for one message of `weight` on `phone`, which holds
    /// `held` now, if `owner`'s phones together stay under `limits`; a phone
    /// without an owner (an operator's) is not counted. On success the
    /// phone's line is `held` plus the message: set it back to what the
    /// phone holds if the message is not stored after all.
    pub fn reserve(
        &self,
        phone: &Phone,
        owner: Option<&TenantId>,
        held: QueueUsage,
        weight: u64,
        limits: &QueueLimits,
    ) -> Result<(), OutboxError> {
        let mut inner = self.lock();
        if let Some(owner) = owner {
            let mut others = inner.tenants.get(owner).copied().unwrap_or_default();
            if let Some((Some(was_owner), was)) = inner.phones.get(phone)
                && was_owner == owner
            {
                others.messages = others.messages.saturating_sub(was.messages);
                others.bytes = others.bytes.saturating_sub(was.bytes);
            }
            let total = QueueUsage {
                messages: others.messages + held.messages,
                bytes: others.bytes + held.bytes,
            };
            total.admits(weight, limits)?;
        }
        let grown = QueueUsage {
            messages: held.messages + 1,
            bytes: held.bytes + weight,
        };
        inner.set(phone, owner, grown);
        Ok(())
    }

    /// What `tenant`'s phones hold together.
    pub fn of_tenant(&self, tenant: &TenantId) -> QueueUsage {
        self.lock().tenants.get(tenant).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenants_phones_share_one_limit_and_a_phone_that_changes_owner_moves_its_share() {
        let quota = OutboxQuota::default();
        let acme = TenantId::parse("acme").unwrap();
        let globex = TenantId::parse("globex").unwrap();
        let (a, b) = (
            Phone::parse("51900000001").unwrap(),
            Phone::parse("51900000002").unwrap(),
        );
        let limits = QueueLimits {
            max_messages: 3,
            max_bytes: 1_000,
        };
        let none = QueueUsage::default();
        quota.reserve(&a, Some(&acme), none, 100, &limits).unwrap();
        let one = QueueUsage {
            messages: 1,
            bytes: 100,
        };
        quota.reserve(&a, Some(&acme), one, 100, &limits).unwrap();
        quota.reserve(&b, Some(&acme), none, 100, &limits).unwrap();
        assert_eq!(
            quota.of_tenant(&acme),
            QueueUsage {
                messages: 3,
                bytes: 300
            }
        );
        assert_eq!(
            quota.reserve(&b, Some(&acme), one, 100, &limits),
            Err(OutboxError::TenantFullOfMessages { held: 3 })
        );
        // Another tenant is not affected, nor is a phone without an owner.
        quota
            .reserve(&b, Some(&globex), none, 900, &limits)
            .unwrap();
        assert_eq!(
            quota.of_tenant(&acme),
            QueueUsage {
                messages: 2,
                bytes: 200
            }
        );
        assert!(matches!(
            quota.reserve(
                &b,
                Some(&globex),
                QueueUsage {
                    messages: 1,
                    bytes: 900
                },
                200,
                &limits
            ),
            Err(OutboxError::TenantFullOfBytes { .. })
        ));
        quota.reserve(&b, None, none, 10_000, &limits).unwrap();
        assert_eq!(quota.of_tenant(&globex), none);
        // A reset empties a phone: its share goes.
        quota.set(&a, Some(&acme), none);
        assert_eq!(quota.of_tenant(&acme), none);
    }
}
