//! Guest applications as a registry source: a module is found by its
//! `wasm:<id>` name once this peer holds it, and is missing (to be fetched)
//! before.

use std::sync::Arc;

use colony_core::divisible::{run_sequential, App, AppError, AppRegistry};
use colony_guest_modules::NQUEENS;
use colony_wasm::{GuestApps, ModuleId, ModuleStore, Sandbox, SandboxLimits};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("colony-guest-apps-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn apps(dir: &std::path::Path) -> Arc<GuestApps> {
    let sandbox = Sandbox::new(SandboxLimits::default()).expect("sandbox");
    let store = ModuleStore::open(dir, 64 << 20).expect("store");
    Arc::new(GuestApps::new(sandbox, store, Box::new(|_, _| Ok(()))))
}

#[test]
fn a_published_module_is_an_application_by_its_hash() {
    let dir = temp_dir("published");
    let apps = apps(&dir);
    let mut registry = colony_apps::examples();
    registry.add_source(apps.clone());
    let name = ModuleId::of(NQUEENS).app_name();

    match registry.get(&name) {
        Err(AppError::ModuleMissing(id)) => assert_eq!(id, ModuleId::of(NQUEENS).to_string()),
        other => panic!("{:?}", other.map(|a| a.name().to_string())),
    }
    let module = apps.publish(NQUEENS).expect("publishes");
    assert_eq!(module.name(), name);
    let app = registry.get(&name).expect("found");
    let params = app.parse_args(&["8".to_string()]).expect("params");
    let (output, _) = run_sequential(app.as_ref(), &params, 10_000).expect("runs");
    assert_eq!(app.output_json(&output).expect("json"), 92);

    // Native names still resolve natively; bad wasm names are errors.
    assert!(registry.get("nqueens").is_ok());
    assert!(matches!(
        registry.get("wasm:xyz"),
        Err(AppError::UnknownApp(_))
    ));
    assert!(matches!(registry.get("nope"), Err(AppError::UnknownApp(_))));

    // Another peer (a fresh sandbox) on the same directory finds it on disk.
    let again = apps_registry(&dir);
    assert!(again.get(&name).is_ok());
    // A damaged file is not run: it reads as missing, to be fetched again.
    std::fs::write(
        dir.join(format!("{}.wasm", ModuleId::of(NQUEENS))),
        b"\0asm junk",
    )
    .expect("damage");
    assert!(matches!(
        apps_registry(&dir).get(&name),
        Err(AppError::ModuleMissing(_))
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

fn apps_registry(dir: &std::path::Path) -> AppRegistry {
    let mut registry = AppRegistry::new();
    registry.add_source(apps(dir));
    registry
}

#[test]
fn a_module_that_is_not_a_guest_is_not_published() {
    let dir = temp_dir("refused");
    let apps = apps(&dir);
    assert!(matches!(apps.publish(b"not wasm"), Err(AppError::Guest(_))));
    assert!(apps.store().list().expect("lists").is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_module_runs_only_once_its_admission_allows_it() {
    let dir = temp_dir("admission");
    let sandbox = Sandbox::new(SandboxLimits::default()).expect("sandbox");
    let store = ModuleStore::open(&dir, 64 << 20).expect("store");
    // Admits a module whose kept signatures say "trusted".
    let admission = Box::new(|id: &ModuleId, signatures: &[u8]| {
        if signatures == b"trusted" {
            Ok(())
        } else {
            Err(format!("nobody this peer trusts signed {id}"))
        }
    });
    let apps = Arc::new(GuestApps::new(sandbox, store, admission));
    let mut registry = AppRegistry::new();
    registry.add_source(apps.clone());
    let id = ModuleId::of(NQUEENS);
    apps.publish(NQUEENS).expect("publishes");
    match registry.get(&id.app_name()) {
        Err(AppError::Untrusted(module, why)) => {
            assert_eq!(module, id.to_string());
            assert!(why.contains("nobody this peer trusts"), "{why}");
        }
        other => panic!("{:?}", other.map(|a| a.name().to_string())),
    }
    // New signatures are judged again: the verdict is not stale.
    apps.set_signatures(&id, b"trusted").expect("kept");
    assert!(registry.get(&id.app_name()).is_ok());
    apps.set_signatures(&id, b"someone else").expect("kept");
    assert!(matches!(
        registry.get(&id.app_name()),
        Err(AppError::Untrusted(..))
    ));
    let _ = std::fs::remove_dir_all(&dir);
}
