//! A simulated Signal party: one device of a simulated phone or contact, with real
//! keys and in-memory stores, able to hand out a pre-key bundle, decrypt what the
//! client encrypts to it (`pkmsg`/`msg`) and encrypt to the client.

use std::collections::HashMap;

use async_trait::async_trait;
use whatsapp_rust::wacore::libsignal::protocol::{
    CiphertextMessage, CiphertextMessageType, Direction, GenericSignedPreKey, IdentityChange,
    IdentityKey, IdentityKeyPair, IdentityKeyStore, KeyPair, PreKeyBundle, PreKeyId, PreKeyRecord,
    PreKeySignalMessage, PreKeyStore, ProtocolAddress, PublicKey, SenderKeyName, SenderKeyRecord,
    SenderKeyStore, SessionRecord, SessionStore, SignalMessage, SignalProtocolError,
    SignedPreKeyId, SignedPreKeyRecord, SignedPreKeyStore, Timestamp, UsePQRatchet,
    create_sender_key_distribution_message, group_encrypt, message_decrypt, message_encrypt,
    process_prekey_bundle,
};
use whatsapp_rust::wacore_binary::Node;
use whatsapp_rust::wacore_binary::builder::NodeBuilder;

use crate::error::SimError;

type SignalResult<T> = Result<T, SignalProtocolError>;

const SIGNED_PRE_KEY_ID: u32 = 1;

fn signal_err(e: SignalProtocolError) -> SimError {
    SimError::Signal(e.to_string())
}

/// The public half of a device's keys, as the server hands it out.
#[derive(Clone)]
pub struct PublicBundle {
    pub registration_id: u32,
    pub identity: [u8; 32],
    pub signed_pre_key_id: u32,
    pub signed_pre_key: [u8; 32],
    pub signed_pre_key_signature: Vec<u8>,
    pub pre_key: Option<(u32, [u8; 32])>,
}

impl PublicBundle {
    /// The children of a `<user>` in a pre-key fetch response.
    pub fn to_nodes(&self) -> Vec<Node> {
        let mut nodes = vec![
            NodeBuilder::new("registration")
                .bytes(self.registration_id.to_be_bytes().to_vec())
                .build(),
            NodeBuilder::new("type").bytes(vec![5u8]).build(),
            NodeBuilder::new("identity")
                .bytes(self.identity.to_vec())
                .build(),
        ];
        if let Some((id, key)) = &self.pre_key {
            nodes.push(
                NodeBuilder::new("key")
                    .children([
                        NodeBuilder::new("id")
                            .bytes(id.to_be_bytes()[1..].to_vec())
                            .build(),
                        NodeBuilder::new("value").bytes(key.to_vec()).build(),
                    ])
                    .build(),
            );
        }
        nodes.push(
            NodeBuilder::new("skey")
                .children([
                    NodeBuilder::new("id")
                        .bytes(self.signed_pre_key_id.to_be_bytes()[1..].to_vec())
                        .build(),
                    NodeBuilder::new("value")
                        .bytes(self.signed_pre_key.to_vec())
                        .build(),
                    NodeBuilder::new("signature")
                        .bytes(self.signed_pre_key_signature.clone())
                        .build(),
                ])
                .build(),
        );
        nodes
    }

    fn to_libsignal(&self, device_id: u32) -> Result<PreKeyBundle, SimError> {
        let key = |b: &[u8; 32]| {
            PublicKey::from_djb_public_key_bytes(b).map_err(|e| SimError::Signal(e.to_string()))
        };
        let pre_key = match &self.pre_key {
            Some((id, k)) => Some((PreKeyId::from(*id), key(k)?)),
            None => None,
        };
        PreKeyBundle::new(
            self.registration_id,
            device_id.into(),
            pre_key,
            SignedPreKeyId::from(self.signed_pre_key_id),
            key(&self.signed_pre_key)?,
            self.signed_pre_key_signature.clone(),
            IdentityKey::new(key(&self.identity)?),
        )
        .map_err(signal_err)
    }
}

struct Identities {
    own: IdentityKeyPair,
    registration_id: u32,
    known: HashMap<String, IdentityKey>,
}

#[async_trait]
impl IdentityKeyStore for Identities {
    async fn get_identity_key_pair(&self) -> SignalResult<IdentityKeyPair> {
        Ok(self.own.clone())
    }
    async fn get_local_registration_id(&self) -> SignalResult<u32> {
        Ok(self.registration_id)
    }
    async fn save_identity(
        &mut self,
        address: &ProtocolAddress,
        identity: &IdentityKey,
    ) -> SignalResult<IdentityChange> {
        let previous = self.known.insert(address.to_string(), *identity);
        Ok(match previous {
            Some(p) if p != *identity => IdentityChange::ReplacedExisting,
            _ => IdentityChange::NewOrUnchanged,
        })
    }
    // The simulator trusts every identity: it is a test peer, not a security boundary.
    async fn is_trusted_identity(
        &self,
        _address: &ProtocolAddress,
        _identity: &IdentityKey,
        _direction: Direction,
    ) -> SignalResult<bool> {
        Ok(true)
    }
    async fn get_identity(&self, address: &ProtocolAddress) -> SignalResult<Option<IdentityKey>> {
        Ok(self.known.get(&address.to_string()).copied())
    }
}

#[derive(Default)]
struct PreKeys(HashMap<u32, PreKeyRecord>);

#[async_trait]
impl PreKeyStore for PreKeys {
    async fn get_pre_key(&self, prekey_id: PreKeyId) -> SignalResult<PreKeyRecord> {
        self.0
            .get(&u32::from(prekey_id))
            .cloned()
            .ok_or(SignalProtocolError::InvalidPreKeyId)
    }
    async fn save_pre_key(
        &mut self,
        prekey_id: PreKeyId,
        record: &PreKeyRecord,
    ) -> SignalResult<()> {
        self.0.insert(u32::from(prekey_id), record.clone());
        Ok(())
    }
    async fn remove_pre_key(&mut self, prekey_id: PreKeyId) -> SignalResult<()> {
        self.0.remove(&u32::from(prekey_id));
        Ok(())
    }
}

struct SignedPreKeys(HashMap<u32, SignedPreKeyRecord>);

#[async_trait]
impl SignedPreKeyStore for SignedPreKeys {
    async fn get_signed_pre_key(&self, id: SignedPreKeyId) -> SignalResult<SignedPreKeyRecord> {
        self.0
            .get(&u32::from(id))
            .cloned()
            .ok_or(SignalProtocolError::InvalidSignedPreKeyId)
    }
    async fn save_signed_pre_key(
        &mut self,
        id: SignedPreKeyId,
        record: &SignedPreKeyRecord,
    ) -> SignalResult<()> {
        self.0.insert(u32::from(id), record.clone());
        Ok(())
    }
}

#[derive(Default)]
struct Sessions(HashMap<String, SessionRecord>);

#[async_trait]
impl SessionStore for Sessions {
    async fn load_session(&self, address: &ProtocolAddress) -> SignalResult<Option<SessionRecord>> {
        Ok(self.0.get(&address.to_string()).cloned())
    }
    async fn has_session(&self, address: &ProtocolAddress) -> SignalResult<bool> {
        Ok(self.0.contains_key(&address.to_string()))
    }
    async fn store_session(
        &mut self,
        address: &ProtocolAddress,
        record: SessionRecord,
    ) -> SignalResult<()> {
        self.0.insert(address.to_string(), record);
        Ok(())
    }
}

#[derive(Default)]
struct SenderKeys(HashMap<SenderKeyName, SenderKeyRecord>);

#[async_trait]
impl SenderKeyStore for SenderKeys {
    async fn store_sender_key(
        &mut self,
        name: &SenderKeyName,
        record: SenderKeyRecord,
    ) -> SignalResult<()> {
        self.0.insert(name.clone(), record);
        Ok(())
    }
    async fn load_sender_key(&self, name: &SenderKeyName) -> SignalResult<Option<SenderKeyRecord>> {
        Ok(self.0.get(name).cloned())
    }
}

/// One simulated Signal device.
pub struct SignalParty {
    sender_keys: SenderKeys,
    identities: Identities,
    pre_keys: PreKeys,
    signed_pre_keys: SignedPreKeys,
    sessions: Sessions,
    signed_pre_key_public: [u8; 32],
    signed_pre_key_signature: Vec<u8>,
    next_pre_key_id: u32,
}

impl SignalParty {
    /// A device with fresh keys. `identity` is given for a phone's primary device,
    /// whose Signal identity is also the account key that signs companion devices.
    pub fn new(identity: KeyPair) -> Result<Self, SimError> {
        let mut rng = rand::rng();
        let registration_id = rand::random::<u32>() & 0x3fff;
        let signed = KeyPair::generate(&mut rng);
        let signature = identity
            .private_key
            .calculate_signature(&signed.public_key.serialize(), &mut rng)
            .map_err(|e| SimError::Signal(e.to_string()))?
            .to_vec();
        let record = SignedPreKeyRecord::new(
            SignedPreKeyId::from(SIGNED_PRE_KEY_ID),
            Timestamp::from_epoch_millis(whatsapp_rust::wacore::time::now_millis() as u64),
            &signed,
            &signature,
        );
        let signed_pre_key_public = key_bytes(&signed.public_key)?;
        let own = IdentityKeyPair::new(IdentityKey::new(identity.public_key), identity.private_key);
        Ok(Self {
            identities: Identities {
                own,
                registration_id,
                known: HashMap::new(),
            },
            pre_keys: PreKeys::default(),
            signed_pre_keys: SignedPreKeys(HashMap::from([(SIGNED_PRE_KEY_ID, record)])),
            sessions: Sessions::default(),
            sender_keys: SenderKeys::default(),
            signed_pre_key_public,
            signed_pre_key_signature: signature,
            next_pre_key_id: 1,
        })
    }

    pub fn generate() -> Result<Self, SimError> {
        Self::new(KeyPair::generate(&mut rand::rng()))
    }

    pub fn identity_public(&self) -> [u8; 32] {
        key_bytes(self.identities.own.public_key()).unwrap_or([0u8; 32])
    }

    /// A bundle with a fresh one-time pre-key, as the server would hand out.
    pub fn bundle(&mut self) -> Result<PublicBundle, SimError> {
        let id = self.next_pre_key_id;
        self.next_pre_key_id += 1;
        let pair = KeyPair::generate(&mut rand::rng());
        let public = key_bytes(&pair.public_key)?;
        self.pre_keys
            .0
            .insert(id, PreKeyRecord::new(PreKeyId::from(id), &pair));
        Ok(PublicBundle {
            registration_id: self.identities.registration_id,
            identity: self.identity_public(),
            signed_pre_key_id: SIGNED_PRE_KEY_ID,
            signed_pre_key: self.signed_pre_key_public,
            signed_pre_key_signature: self.signed_pre_key_signature.clone(),
            pre_key: Some((id, public)),
        })
    }

    pub fn has_session(&self, peer: &ProtocolAddress) -> bool {
        self.sessions.0.contains_key(&peer.to_string())
    }

    /// Starts a session towards `peer` from its published bundle.
    pub async fn start_session(
        &mut self,
        peer: &ProtocolAddress,
        bundle: &PublicBundle,
        peer_device_id: u32,
    ) -> Result<(), SimError> {
        let bundle = bundle.to_libsignal(peer_device_id)?;
        // A Send RNG: this future is held across awaits inside connection tasks.
        let mut rng = rand::make_rng::<rand::rngs::StdRng>();
        process_prekey_bundle(
            peer,
            &mut self.sessions,
            &mut self.identities,
            &bundle,
            &mut rng,
            UsePQRatchet::No,
        )
        .await
        .map_err(signal_err)?;
        Ok(())
    }

    /// Encrypts to `peer`; returns the `<enc type>` (`pkmsg` or `msg`) and the bytes.
    pub async fn encrypt(
        &mut self,
        peer: &ProtocolAddress,
        plaintext: &[u8],
    ) -> Result<(&'static str, Vec<u8>), SimError> {
        let message = message_encrypt(plaintext, peer, &mut self.sessions, &mut self.identities)
            .await
            .map_err(signal_err)?;
        let kind = match message.message_type() {
            CiphertextMessageType::PreKey => "pkmsg",
            _ => "msg",
        };
        Ok((kind, message.serialize().to_vec()))
    }

    /// This device's sender key for `group` (created on first use), as the
    /// serialized `SenderKeyDistributionMessage` its members need.
    pub async fn sender_key_distribution(&mut self, group: &str) -> Result<Vec<u8>, SimError> {
        let name = SenderKeyName::from_parts(group, "self");
        let mut rng = rand::make_rng::<rand::rngs::StdRng>();
        let message =
            create_sender_key_distribution_message(&name, &mut self.sender_keys, &mut rng)
                .await
                .map_err(signal_err)?;
        Ok(message.serialized().to_vec())
    }

    /// Encrypts to `group` with this device's sender key (an `skmsg`).
    pub async fn group_encrypt(
        &mut self,
        group: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SimError> {
        let name = SenderKeyName::from_parts(group, "self");
        let mut rng = rand::make_rng::<rand::rngs::StdRng>();
        let message = group_encrypt(&mut self.sender_keys, &name, plaintext, &mut rng)
            .await
            .map_err(signal_err)?;
        Ok(message.serialized().to_vec())
    }

    /// Decrypts an `<enc>` of type `pkmsg` or `msg` sent by `peer`.
    pub async fn decrypt(
        &mut self,
        peer: &ProtocolAddress,
        kind: &str,
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, SimError> {
        let message = match kind {
            "pkmsg" => CiphertextMessage::PreKeySignalMessage(
                PreKeySignalMessage::try_from(ciphertext).map_err(signal_err)?,
            ),
            "msg" => CiphertextMessage::SignalMessage(
                SignalMessage::try_from(ciphertext).map_err(signal_err)?,
            ),
            other => return Err(SimError::Signal(format!("unsupported enc type {other}"))),
        };
        let mut rng = rand::make_rng::<rand::rngs::StdRng>();
        let result = message_decrypt(
            &message,
            peer,
            &mut self.sessions,
            &mut self.identities,
            &mut self.pre_keys,
            &self.signed_pre_keys,
            &mut rng,
            UsePQRatchet::No,
        )
        .await
        .map_err(signal_err)?;
        Ok(result.plaintext)
    }
}

fn key_bytes(key: &PublicKey) -> Result<[u8; 32], SimError> {
    key.public_key_bytes()
        .try_into()
        .map_err(|_| SimError::Signal("public key is not 32 bytes".into()))
}

/// WhatsApp pads plaintext before Signal encryption: 1 to 16 bytes, each equal to
/// the pad length.
pub fn pad(mut plaintext: Vec<u8>) -> Vec<u8> {
    let n = (rand::random::<u8>() % 16) + 1;
    plaintext.extend(std::iter::repeat_n(n, usize::from(n)));
    plaintext
}

pub fn unpad(mut plaintext: Vec<u8>) -> Vec<u8> {
    if let Some(&n) = plaintext.last() {
        let n = usize::from(n);
        if n > 0 && n <= plaintext.len() {
            plaintext.truncate(plaintext.len() - n);
        }
    }
    plaintext
}

/// A Signal address as this simulator names peers: `user.device` on its server.
pub fn address(user: &str, server: &str, device: u16) -> ProtocolAddress {
    ProtocolAddress::new(&format!("{user}@{server}"), u32::from(device).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_round_trips() {
        for len in [0usize, 1, 15, 16, 100] {
            let data = vec![7u8; len];
            assert_eq!(unpad(pad(data.clone())), data);
        }
    }

    #[tokio::test]
    async fn two_parties_exchange_messages_both_ways() {
        let mut alice = SignalParty::generate().unwrap();
        let mut bob = SignalParty::generate().unwrap();
        let alice_addr = address("1", "s.whatsapp.net", 0);
        let bob_addr = address("2", "s.whatsapp.net", 0);
        let bundle = bob.bundle().unwrap();
        alice.start_session(&bob_addr, &bundle, 0).await.unwrap();

        let (kind, bytes) = alice.encrypt(&bob_addr, b"first").await.unwrap();
        assert_eq!(kind, "pkmsg");
        assert_eq!(
            bob.decrypt(&alice_addr, kind, &bytes).await.unwrap(),
            b"first"
        );

        let (kind, bytes) = bob.encrypt(&alice_addr, b"reply").await.unwrap();
        assert_eq!(kind, "msg");
        assert_eq!(
            alice.decrypt(&bob_addr, kind, &bytes).await.unwrap(),
            b"reply"
        );
    }
}
