//! MongoDB chores for local runs and benchmarks: creating users.

use std::time::Duration;

use mongodb::bson::doc;
use mongodb::options::{ClientOptions, Credential, ServerAddress};
use mongodb::sync::Client;

#[derive(clap::Args)]
pub struct CreateUser {
    /// MongoDB host
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// MongoDB port
    #[arg(long)]
    port: u16,
    /// Log in as this user (omit for the first user, created through the localhost exception)
    #[arg(long, env = "ADMIN_USER")]
    admin_user: Option<String>,
    /// Password of --admin-user
    #[arg(long, env = "ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: Option<String>,
    /// Name of the user to create
    #[arg(long)]
    user: String,
    /// Its password (read from the environment so that it stays off command lines)
    #[arg(long, env = "NEW_USER_PASSWORD", hide_env_values = true)]
    password: String,
    /// `root` for an administrator, or `readWrite@DB` for an application user
    #[arg(long, default_value = "root")]
    role: String,
}

fn connect(host: &str, port: u16, login: Option<(&str, &str)>) -> mongodb::error::Result<Client> {
    let mut options = ClientOptions::default();
    options.hosts = vec![ServerAddress::Tcp {
        host: host.to_owned(),
        port: Some(port),
    }];
    options.direct_connection = Some(true);
    options.server_selection_timeout = Some(Duration::from_secs(10));
    options.credential = login.map(|(user, password)| {
        Credential::builder()
            .username(user.to_owned())
            .password(password.to_owned())
            .source("admin".to_owned())
            .build()
    });
    Client::with_options(options)
}

pub fn create_user(args: &CreateUser) -> Result<(), String> {
    let login = match (&args.admin_user, &args.admin_password) {
        (Some(u), Some(p)) => Some((u.as_str(), p.as_str())),
        (None, None) => None,
        _ => return Err("--admin-user and --admin-password go together".into()),
    };
    add_user(
        &args.host,
        args.port,
        login,
        &args.user,
        &args.password,
        &args.role,
    )?;
    println!("created MongoDB user {} ({})", args.user, args.role);
    Ok(())
}

/// Creates `user` on the server at `host:port`, logged in as `login` if given. `role` is
/// `root`, or `readWrite@DB` for a role on one database.
pub fn add_user(
    host: &str,
    port: u16,
    login: Option<(&str, &str)>,
    user: &str,
    password: &str,
    role: &str,
) -> Result<(), String> {
    let role = match role.split_once('@') {
        Some((role, db)) => doc! { "role": role, "db": db },
        None => doc! { "role": role, "db": "admin" },
    };
    let client = connect(host, port, login).map_err(|e| e.to_string())?;
    client
        .database("admin")
        .run_command(doc! { "createUser": user, "pwd": password, "roles": [role] })
        .run()
        .map_err(|e| format!("createUser {user}: {}", e.kind))?;
    Ok(())
}
