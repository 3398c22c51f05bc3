# Source this file (". scripts/activate_venv.sh") to enter the dev venv, building it first if needed.
_sms_sim_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$_sms_sim_root/scripts/create_venv.sh" && . "$_sms_sim_root/.venv/bin/activate"
unset _sms_sim_root
