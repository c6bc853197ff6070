//! The configs an import would write, checked against this host: as `nodeapp check`
//! checks them, and whether what they run is here.

use super::super::files;
use super::Converted;
use nodeapp::config;

/// What `nodeapp check` would say of each config, and whether its directory and script
/// are there: an import never writes a config that cannot start for a reason seen here.
/// Each config is checked against the others of the file and those already installed;
/// one of the same name is there to be replaced with --force, and only then.
pub fn check(converted: &mut [Converted], force: bool) {
    let installed: Vec<config::Config> = files::every_config()
        .map(|(_, files)| files)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| config::load(p).ok())
        .collect();
    let mut accepted: Vec<config::Config> = Vec::new();
    for c in converted.iter_mut() {
        let Ok(text) = &c.toml else { continue };
        let path = files::app_config(&c.name);
        let checked = config::parse(&path, text.as_bytes())
            .map_err(|e| format!("the config would not pass `nodeapp check`: {e}"))
            .and_then(|config| {
                if !force && path.exists() {
                    return Err(format!("{} exists; --force replaces it", path.display()));
                }
                runs_here(&config)?;
                files::check_on_this_host(&config)?;
                let others: Vec<config::Config> = installed
                    .iter()
                    .filter(|o| !(force && o.name == config.name))
                    .chain(&accepted)
                    .cloned()
                    .collect();
                files::shares_no_address(&config, &others)?;
                Ok(config)
            });
        match checked {
            Ok(config) => accepted.push(config),
            Err(why) => c.toml = Err(why),
        }
    }
}

/// The app's directory and script exist, as PM2 needs them too ("Script not found").
fn runs_here(config: &config::Config) -> Result<(), String> {
    let cwd = &config.cwd;
    if !cwd.is_dir() {
        return Err(format!(
            "cwd {} is not a directory here; import on the host the app is deployed to, or \
             correct cwd",
            cwd.display()
        ));
    }
    let script = cwd.join(&config.script);
    if !script.is_file() {
        return Err(format!(
            "its script {} does not exist (PM2: \"Script not found\"); build or install the \
             app first (node_modules included), or correct script/cwd",
            script.display()
        ));
    }
    Ok(())
}
