//! `MsgSecretStore` on PostgreSQL: the secrets of sent messages, for decrypting replies to them.

use async_trait::async_trait;
use tokio_postgres::types::ToSql;
use wacore::store::error::Result;
use wacore::store::traits::{MsgSecretEntry, MsgSecretStore};

use super::{PgBackend, run};

#[async_trait]
impl MsgSecretStore for PgBackend {
    async fn put_msg_secrets(&self, entries: Vec<MsgSecretEntry>) -> Result<usize> {
        if entries.is_empty() {
            return Ok(0);
        }
        // On conflict, as `merge_msg_secret_expiry` and
        // `merge_msg_secret_message_ts` say: 0 ("never") or the later deadline
        // wins, and the later parent time wins.
        let phone = self.phone();
        let keys: Vec<(&str, &str, &str, &[u8])> = entries
            .iter()
            .map(|entry| {
                (
                    entry.chat.as_ref(),
                    entry.sender.as_ref(),
                    entry.msg_id.as_ref(),
                    &entry.secret[..],
                )
            })
            .collect();
        let rows: Vec<[&(dyn ToSql + Sync); 7]> = keys
            .iter()
            .zip(&entries)
            .map(|((chat, sender, msg_id, secret), entry)| {
                [
                    &phone as &(dyn ToSql + Sync),
                    chat,
                    sender,
                    msg_id,
                    secret,
                    &entry.expires_at,
                    &entry.message_ts,
                ]
            })
            .collect();
        run(async {
            let stored = self
                .write_many(
                    "INSERT INTO wa_msg_secrets
                         (phone, chat, sender, msg_id, secret, created_at, expires_at, message_ts)
                     VALUES ($1, $2, $3, $4, $5, extract(epoch from now())::bigint, $6, $7)
                     ON CONFLICT (phone, chat, sender, msg_id) DO UPDATE SET
                         secret = excluded.secret,
                         created_at = excluded.created_at,
                         expires_at = CASE
                             WHEN wa_msg_secrets.expires_at = 0 OR excluded.expires_at = 0 THEN 0
                             ELSE GREATEST(wa_msg_secrets.expires_at, excluded.expires_at) END,
                         message_ts = GREATEST(wa_msg_secrets.message_ts, excluded.message_ts)",
                    &rows,
                )
                .await?;
            Ok(usize::try_from(stored).unwrap_or(usize::MAX))
        })
        .await
    }

    async fn get_msg_secret(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        Ok(self
            .get_msg_secret_with_ts(chat, sender, msg_id)
            .await?
            .map(|(secret, _)| secret))
    }

    async fn get_msg_secret_with_ts(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<(Vec<u8>, i64)>> {
        run(async {
            let row = self
                .read_opt(
                    "SELECT secret, message_ts FROM wa_msg_secrets
                     WHERE phone = $1 AND chat = $2 AND sender = $3 AND msg_id = $4",
                    &[&self.phone(), &chat, &sender, &msg_id],
                )
                .await?;
            match row {
                Some(row) => Ok(Some((row.try_get(0)?, row.try_get(1)?))),
                None => Ok(None),
            }
        })
        .await
    }

    async fn delete_expired_msg_secrets(&self, cutoff_timestamp: i64) -> Result<u32> {
        run(async {
            let removed = self
                .write(
                    "DELETE FROM wa_msg_secrets
                     WHERE phone = $1 AND expires_at <> 0 AND expires_at <= $2",
                    &[&self.phone(), &cutoff_timestamp],
                )
                .await?;
            Ok(u32::try_from(removed).unwrap_or(u32::MAX))
        })
        .await
    }
}
