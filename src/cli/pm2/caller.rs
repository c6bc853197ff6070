//! The environment `nodeapp import-pm2` runs in, as the ecosystem file used it.

use super::{load, scalar};
use serde_json::{Map, Value};

/// The importer's own environment, as far as the ecosystem file used it: values that
/// came from it are named in the notes, and a wholesale copy is not written into a config.
#[derive(Default)]
pub struct Caller {
    /// The variables the file read, with their values here.
    pub read: Vec<(String, String)>,
    /// Every variable here, when the file enumerated the environment.
    pub copied: Option<std::collections::BTreeMap<String, String>>,
}

impl Caller {
    pub fn from_env(loaded: &load::Loaded) -> Caller {
        Caller {
            read: loaded
                .read_env
                .iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v)))
                .collect(),
            copied: loaded.copied_env.then(|| std::env::vars().collect()),
        }
    }

    /// Drops the entries of `env` that only repeat a copied environment, and says which
    /// kept values came from the caller's environment.
    pub fn sift(&self, env: &mut Map<String, Value>, notes: &mut Vec<String>) {
        if let Some(all) = &self.copied {
            let repeated: Vec<String> = env
                .iter()
                .filter(|(k, v)| scalar(v).is_some_and(|v| all.get(*k) == Some(&v)))
                .map(|(k, _)| k.clone())
                .collect();
            if !repeated.is_empty() {
                for k in &repeated {
                    env.shift_remove(k);
                }
                notes.push(format!(
                    "env copies the environment `nodeapp import-pm2` ran in (process.env): {} \
                     variables with the same value here were not written ({}); add to [env] \
                     the ones the app needs",
                    repeated.len(),
                    abbreviate(&repeated)
                ));
            }
        }
        for (key, value) in env.iter() {
            let Some(value) = scalar(value) else { continue };
            if let Some((from, _)) = self.read.iter().find(|(_, v)| *v == value && !v.is_empty()) {
                notes.push(format!(
                    "env.{key} is {value:?} from this shell's ${from}, as PM2 would read it \
                     here; check it is what the app should run with"
                ));
            }
        }
    }
}

/// The first few of `names`, and how many more.
fn abbreviate(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(6).map(String::as_str).collect();
    match names.len().saturating_sub(shown.len()) {
        0 => shown.join(", "),
        more => format!("{}, and {more} more", shown.join(", ")),
    }
}
