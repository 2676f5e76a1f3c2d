//! `crm-connector-files-local`: the local-directory files connector as its own process on
//! RabbitMQ. Settings: `CRM_CONNECTOR_AMQP_URL`, `CRM_CONNECTOR_FILES_LOCAL_DATA_DIR`,
//! `CRM_CONNECTOR_FILES_LOCAL_MAX_FILE_BYTES` (see `--help`).

use crm_connector_files_local::FilesLocal;
use std::process::ExitCode;

fn main() -> ExitCode {
    crm_connector::main(FilesLocal::new)
}
