//! Whose code a peer runs (BOINC's answer to volunteer computing's
//! security problem, seed 002 §2.2): a submitter signs the id of each
//! module it runs with its peer key; a host runs a module only if its
//! policy admits it — any member of the network (`--trust-network`), or a
//! module signed by a peer on its allow-list (`--trust PEER_ID|KEY_FILE`).
//! Peers that run no guests at all are not asked: they have no module
//! store.
//!
//! Signatures travel with the module ([`ModuleSignature`], at most
//! [`MAX_SIGNATURES`] per module) and are kept beside it in the module
//! store; a host judges them when a job names the module, and again when
//! new ones arrive.

use std::collections::BTreeSet;
use std::path::Path;

use colony_core::modules::{self, ModuleSignature, MAX_SIGNATURES};
use colony_core::wire;
use libp2p::identity::{Keypair, PublicKey};
use libp2p::PeerId;

/// Where a peer writes its public key, for others' `--trust KEY_FILE`.
pub const PUBLIC_KEY_FILE: &str = "peer.pub";

/// Most peers an allow-list may name (they are gossiped with the peer's
/// statistics, so submitters can pick a home that will run their code).
pub const MAX_TRUSTED_SIGNERS: usize = 32;

/// Whose guest modules a peer runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestTrust {
    /// Any member of the network: every module (fine with a pre-shared
    /// key, where members hold the key).
    Network,
    /// Modules signed by one of these peers.
    Signers(BTreeSet<PeerId>),
}

impl GuestTrust {
    /// An allow-list from `--trust` entries, each a peer id or a file
    /// holding a peer id or a public key ([`PUBLIC_KEY_FILE`]).
    pub fn signers<S: AsRef<str>>(entries: &[S]) -> Result<GuestTrust, String> {
        if entries.len() > MAX_TRUSTED_SIGNERS {
            return Err(format!(
                "--trust names {} peers; at most {MAX_TRUSTED_SIGNERS} are allowed",
                entries.len()
            ));
        }
        let signers = entries
            .iter()
            .map(|entry| trusted_peer(entry.as_ref()))
            .collect::<Result<BTreeSet<PeerId>, String>>()?;
        Ok(GuestTrust::Signers(signers))
    }

    /// Whether a module signed with `signatures` may run here; `Err` says
    /// who signed it and whom this peer trusts.
    pub fn admits(&self, id: &str, signatures: &[ModuleSignature]) -> Result<(), String> {
        let trusted = match self {
            GuestTrust::Network => return Ok(()),
            GuestTrust::Signers(trusted) => trusted,
        };
        let signers: Vec<PeerId> = signatures.iter().filter_map(|s| signer(s, id)).collect();
        if signers.iter().any(|s| trusted.contains(s)) {
            return Ok(());
        }
        let short = id.get(..12).unwrap_or(id);
        let signed = if signers.is_empty() {
            "carries no valid signature".to_string()
        } else {
            format!("is signed by {}", list(signers.iter()))
        };
        Err(format!(
            "module {short}… {signed}; this peer runs only code signed by {}",
            list(trusted.iter())
        ))
    }

    /// The peer ids a submitter reads from this peer's statistics: empty
    /// for [`GuestTrust::Network`].
    pub fn gossiped(&self) -> Vec<String> {
        match self {
            GuestTrust::Network => Vec::new(),
            GuestTrust::Signers(trusted) => trusted.iter().map(PeerId::to_string).collect(),
        }
    }
}

/// `peer`'s signature over module `id`.
pub fn sign(keypair: &Keypair, id: &str) -> Result<ModuleSignature, String> {
    let signature = keypair
        .sign(&modules::signed_bytes(id))
        .map_err(|e| format!("cannot sign module {id}: {e}"))?;
    Ok(ModuleSignature {
        key: keypair.public().encode_protobuf(),
        signature,
    })
}

/// The peer whose valid signature over module `id` this is, if it is one.
pub fn signer(signature: &ModuleSignature, id: &str) -> Option<PeerId> {
    let key = PublicKey::try_decode_protobuf(&signature.key).ok()?;
    key.verify(&modules::signed_bytes(id), &signature.signature)
        .then(|| key.to_peer_id())
}

/// Signatures as the module store keeps them.
pub fn encode_signatures(signatures: &[ModuleSignature]) -> Vec<u8> {
    let bounded = &signatures[..signatures.len().min(MAX_SIGNATURES)];
    wire::encode(&bounded.to_vec(), colony_wasm::MAX_SIGNATURES_BYTES).unwrap_or_default()
}

/// Signatures as the module store kept them; a damaged record reads as
/// none (so the module is judged unsigned, never trusted by mistake).
pub fn decode_signatures(bytes: &[u8]) -> Vec<ModuleSignature> {
    if bytes.is_empty() {
        return Vec::new();
    }
    wire::decode::<Vec<ModuleSignature>>(bytes, colony_wasm::MAX_SIGNATURES_BYTES)
        .ok()
        .filter(|s| modules::signatures_in_bounds(s))
        .unwrap_or_default()
}

/// The sandbox's admission for `trust`.
pub fn admission(trust: GuestTrust) -> Box<colony_wasm::Admission> {
    Box::new(move |id, kept| trust.admits(&id.to_string(), &decode_signatures(kept)))
}

/// Writes this peer's public key to `DATA_DIR/peer.pub`.
pub fn write_public_key(data_dir: &Path, keypair: &Keypair) -> std::io::Result<()> {
    std::fs::write(
        data_dir.join(PUBLIC_KEY_FILE),
        keypair.public().encode_protobuf(),
    )
}

/// The peer a `--trust` entry names: a peer id, or a file holding one (as
/// text) or a public key (as `peer.pub` holds it).
fn trusted_peer(entry: &str) -> Result<PeerId, String> {
    if let Ok(peer) = entry.parse::<PeerId>() {
        return Ok(peer);
    }
    let bytes = std::fs::read(entry).map_err(|e| {
        format!("--trust {entry:?} is neither a peer id nor a readable key file: {e}")
    })?;
    if let Some(peer) = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| text.trim().parse::<PeerId>().ok())
    {
        return Ok(peer);
    }
    PublicKey::try_decode_protobuf(&bytes)
        .map(|key| key.to_peer_id())
        .map_err(|e| format!("--trust {entry}: neither a peer id nor a public key ({e})"))
}

fn list<'a>(peers: impl Iterator<Item = &'a PeerId>) -> String {
    let all: Vec<String> = peers.map(PeerId::to_string).collect();
    all.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "5b1e6c7f00000000000000000000000000000000000000000000000000000000";

    #[test]
    fn a_signer_on_the_list_admits_a_module_and_nobody_else_does() {
        let alice = Keypair::generate_ed25519();
        let mallory = Keypair::generate_ed25519();
        let alice_id = alice.public().to_peer_id();
        let trust = GuestTrust::signers(&[alice_id.to_string()]).expect("parses");
        let by_alice = sign(&alice, ID).expect("signs");
        let by_mallory = sign(&mallory, ID).expect("signs");
        assert_eq!(signer(&by_alice, ID), Some(alice_id));
        assert!(trust
            .admits(ID, &[by_mallory.clone(), by_alice.clone()])
            .is_ok());

        let refused = trust
            .admits(ID, std::slice::from_ref(&by_mallory))
            .expect_err("refused");
        assert!(
            refused.contains(&mallory.public().to_peer_id().to_string())
                && refused.contains(&alice_id.to_string()),
            "{refused}"
        );
        assert!(trust
            .admits(ID, &[])
            .expect_err("unsigned")
            .contains("no valid signature"));
        // A signature over another module, or with another key, is no
        // signature: Mallory cannot reuse Alice's for her own module.
        let other = ID.replace('5', "6");
        assert!(trust
            .admits(&other, std::slice::from_ref(&by_alice))
            .is_err());
        let forged = ModuleSignature {
            key: alice.public().encode_protobuf(),
            signature: by_mallory.signature,
        };
        assert!(trust.admits(ID, &[forged]).is_err());
        assert!(GuestTrust::Network.admits(ID, &[]).is_ok());
    }

    #[test]
    fn trust_entries_are_peer_ids_or_key_files_and_bad_ones_are_errors() {
        let dir = std::env::temp_dir().join(format!("colony-trust-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let alice = Keypair::generate_ed25519();
        write_public_key(&dir, &alice).expect("writes");
        let key_file = dir.join(PUBLIC_KEY_FILE);
        let id_file = dir.join("bob.id");
        let bob = PeerId::random();
        std::fs::write(&id_file, format!("{bob}\n")).expect("writes");
        let trust = GuestTrust::signers(&[
            key_file.display().to_string(),
            id_file.display().to_string(),
        ])
        .expect("parses");
        assert_eq!(
            trust,
            GuestTrust::Signers([alice.public().to_peer_id(), bob].into())
        );
        let junk = dir.join("junk");
        std::fs::write(&junk, b"\xff\x00 not a key").expect("writes");
        for bad in [junk.display().to_string(), "no-such-file".to_string()] {
            let error = GuestTrust::signers(std::slice::from_ref(&bad)).expect_err("refused");
            assert!(error.contains(&bad), "{error}");
        }
        let too_many: Vec<String> = (0..=MAX_TRUSTED_SIGNERS)
            .map(|_| PeerId::random().to_string())
            .collect();
        assert!(GuestTrust::signers(&too_many).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn kept_signatures_round_trip_and_damage_reads_as_unsigned() {
        let alice = Keypair::generate_ed25519();
        let signatures = vec![sign(&alice, ID).expect("signs")];
        let kept = encode_signatures(&signatures);
        assert_eq!(decode_signatures(&kept), signatures);
        assert!(decode_signatures(&kept[..kept.len() / 2]).is_empty());
        assert!(decode_signatures(b"\xff\xff\xff\xff").is_empty());
    }
}
