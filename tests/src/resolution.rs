//! The registry (issue: loader): ids and aliases in one namespace, fail-closed resolution,
//! in-process runtimes beside plugins, concurrent use.

use std::sync::Arc;

use runtime_api::{Runtime, RuntimeError, TurnOutput, TurnRequest, Value};
use runtime_loader::{
    LoaderOptions, RegistryError, ResolveError, RuntimeSource, Runtimes, Unregistered,
};

use crate::support::{artifacts, install, plugin_dir, registry};

/// A runtime compiled into the host.
struct Upper;

impl Runtime for Upper {
    const ID: &'static str = "upper";
    const ALIASES: &'static [&'static str] = &["shout"];

    fn new(_config: Value) -> Result<Self, RuntimeError> {
        Ok(Upper)
    }

    async fn run_turn(&self, request: TurnRequest) -> Result<TurnOutput, RuntimeError> {
        Ok(TurnOutput::new(request.prompt.to_uppercase()))
    }
}

fn with_echo() -> (tempfile::TempDir, Runtimes) {
    let dir = plugin_dir();
    install(dir.path(), &artifacts().echo, "libecho");
    let runtimes = registry(&[dir.path()]);
    (dir, runtimes)
}

#[tokio::test]
async fn an_in_process_runtime_registers_beside_plugins() {
    let (_dir, runtimes) = with_echo();
    runtimes.register::<Upper>().unwrap();
    assert_eq!(runtimes.list_names(), vec!["echo", "upper"]);
    let entry = runtimes.get_entry("shout").unwrap();
    assert_eq!(entry.source, RuntimeSource::BuiltIn);
    assert_eq!(entry.aliases, vec!["shout"]);
    let output = runtimes
        .resolve("shout")
        .unwrap()
        .run_turn(TurnRequest::new("hi"))
        .await;
    assert_eq!(output.unwrap().content, "HI");
    assert!(matches!(
        runtimes.register::<Upper>(),
        Err(RegistryError::AlreadyRegistered { .. })
    ));
}

#[test]
fn aliases_never_shadow_ids_and_repointing_is_explicit() {
    let (_dir, runtimes) = with_echo();
    runtimes.register::<Upper>().unwrap();
    assert_eq!(
        runtimes.add_alias("upper", "echo"),
        Err(RegistryError::AliasShadowsId {
            alias: "upper".into()
        })
    );
    assert_eq!(
        runtimes.add_alias("x", "nope"),
        Err(RegistryError::Unknown {
            name: "nope".into()
        })
    );
    assert!(matches!(
        runtimes.add_alias("Bad Name", "echo"),
        Err(RegistryError::InvalidName { .. })
    ));
    runtimes.add_alias("mirror", "parrot").unwrap(); // a target given by alias means its id
    assert_eq!(runtimes.get_entry("mirror").unwrap().id, "echo");
    runtimes.add_alias("mirror", "echo").unwrap(); // the same again is a no-op
    assert_eq!(
        runtimes.add_alias("mirror", "upper"),
        Err(RegistryError::AliasTaken {
            alias: "mirror".into(),
            current: "echo".into(),
            requested: "upper".into()
        })
    );
    assert_eq!(
        runtimes.repoint_alias("mirror", "upper"),
        Ok(Some("echo".into()))
    );
    assert_eq!(runtimes.get_entry("mirror").unwrap().id, "upper");
    assert_eq!(runtimes.get_entry("echo").unwrap().aliases, vec!["parrot"]);
    assert_eq!(
        runtimes.get_entry("upper").unwrap().aliases,
        vec!["mirror", "shout"]
    );
}

#[test]
fn unregistering_an_alias_removes_only_the_alias() {
    let (_dir, runtimes) = with_echo();
    assert_eq!(
        runtimes.unregister("parrot"),
        Ok(Unregistered::Alias {
            alias: "parrot".into(),
            target: "echo".into()
        })
    );
    assert!(runtimes.is_registered("echo"));
    assert!(!runtimes.is_registered("parrot"));
    assert_eq!(
        runtimes.remove_alias("parrot"),
        Err(RegistryError::Unknown {
            name: "parrot".into()
        })
    );
}

#[test]
fn unregistering_an_id_removes_it_and_its_aliases() {
    let (_dir, runtimes) = with_echo();
    runtimes.add_alias("mirror", "echo").unwrap();
    assert_eq!(
        runtimes.unregister("echo"),
        Ok(Unregistered::Runtime {
            id: "echo".into(),
            aliases: vec!["mirror".into(), "parrot".into()]
        })
    );
    assert!(!runtimes.is_registered("parrot"));
    assert!(!runtimes.is_registered("mirror"));
    assert_eq!(
        runtimes.unregister("echo"),
        Err(RegistryError::Unknown {
            name: "echo".into()
        })
    );
}

#[test]
fn remove_alias_and_clear() {
    let (_dir, runtimes) = with_echo();
    assert_eq!(runtimes.remove_alias("parrot"), Ok("echo".into()));
    assert!(matches!(
        runtimes.remove_alias("echo"),
        Err(RegistryError::Unknown { .. })
    ));
    runtimes.clear();
    assert!(runtimes.list_runtimes().is_empty());
    assert!(runtimes.report().dirs.is_empty());
}

#[test]
fn resolving_an_unknown_name_fails_closed_with_what_is_available() {
    let (_dir, runtimes) = with_echo();
    runtimes.register::<Upper>().unwrap();
    let error = runtimes.resolve("ecko").unwrap_err();
    let ResolveError::NotFound {
        name,
        available,
        suggestion,
    } = &error
    else {
        panic!("not found: {error:?}");
    };
    assert_eq!(name, "ecko");
    assert_eq!(suggestion.as_deref(), Some("echo"));
    assert_eq!(
        available.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        vec!["echo", "upper"]
    );
    assert_eq!(available[0].aliases, vec!["parrot"]);
    let text = error.to_string();
    assert_eq!(
        text,
        "no runtime named `ecko`. Did you mean `echo`? Available: echo (alias parrot), upper (alias shout). View all installed runtimes with `runtimes list --all`."
    );
    assert!(!text.contains('\n'), "one short paragraph");
}

#[test]
fn resolving_in_an_empty_registry_says_how_to_install() {
    let runtimes = Runtimes::with_options(LoaderOptions::STRICT);
    let text = runtimes.resolve("echo").unwrap_err().to_string();
    assert!(text.contains("No runtime is installed"), "{text}");
    assert!(text.contains("runtimes install"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_use_the_registry_and_run_turns_at_once() {
    let (_dir, runtimes) = with_echo();
    let runtimes = Arc::new(runtimes);
    let mut tasks = Vec::new();
    for task in 0..64 {
        let runtimes = Arc::clone(&runtimes);
        tasks.push(tokio::spawn(async move {
            for turn in 0..20 {
                let name = if turn % 2 == 0 { "echo" } else { "parrot" };
                let handle = runtimes.resolve(name).unwrap();
                let prompt = format!("task {task} turn {turn}");
                let output = handle
                    .run_turn(TurnRequest::new(prompt.clone()))
                    .await
                    .unwrap();
                assert_eq!(output.content, prompt);
                let alias = format!("a{task}");
                runtimes.add_alias(&alias, "echo").unwrap();
                assert!(runtimes.is_registered(&alias));
                runtimes.remove_alias(&alias).unwrap();
                assert!(!runtimes.list_runtimes().is_empty());
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(runtimes.get_entry("echo").unwrap().aliases, vec!["parrot"]);
}
