//! The default instance name: `<hostname>-<pid>`.

/// `<hostname>-<pid>`, the hostname from the kernel, `HOSTNAME`, or `localhost`.
pub(crate) fn default_instance() -> String {
    format!("{}-{}", hostname(), std::process::id())
}

fn hostname() -> String {
    let from_file = |path: &str| std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    from_file("/proc/sys/kernel/hostname")
        .or_else(|| from_file("/etc/hostname"))
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn instance_names_host_and_process() {
        let instance = super::default_instance();
        assert!(instance.ends_with(&format!("-{}", std::process::id())), "{instance}");
        assert!(instance.len() > 2);
    }
}
