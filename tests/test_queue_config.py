"""QueueConfig: defaults, profile file, TOML file, environment; bad values name the fix."""

import pytest

from sage.utils import QueueConfig, load_config


def test_defaults_when_nothing_is_configured(tmp_path, clean_env):
    config = load_config(environ={}, prefix=str(tmp_path))
    assert config == QueueConfig()
    assert config.backend == "auto"
    assert set(config.sources.values()) == {"default"}


def test_environment_overrides_file_which_overrides_profile(tmp_path, clean_env):
    (tmp_path / "sage-profile.json").write_text('{"profile": "minimal", "queue_backend": "ray"}')
    toml = tmp_path / "queue.toml"
    toml.write_text('[queue]\nbackend = "python"\nmaxsize = 7\ncapacity_bytes = 65536\n')
    config = load_config(environ={"SAGE_QUEUE_CONFIG": str(toml)}, prefix=str(tmp_path))
    assert (config.backend, config.maxsize, config.capacity_bytes) == ("python_queue", 7, 65536)
    assert config.sources["backend"] == f"file {toml}"
    env = {"SAGE_QUEUE_CONFIG": str(toml), "SAGE_QUEUE_BACKEND": "sage", "SAGE_QUEUE_MAXSIZE": "3"}
    config = load_config(environ=env, prefix=str(tmp_path))
    assert (config.backend, config.maxsize) == ("sage_queue", 3)
    assert config.sources["maxsize"] == "env SAGE_QUEUE_MAXSIZE"
    assert config.sources["capacity_bytes"] == f"file {toml}"


def test_sage_toml_in_the_working_directory_is_read(tmp_path, clean_env):
    (tmp_path / "sage.toml").write_text('[queue]\nget_timeout = 2.5\nray_address = "127.0.0.1:6379"\n')
    config = load_config(environ={}, prefix=str(tmp_path))
    assert config.get_timeout == 2.5 and config.ray_address == "127.0.0.1:6379"


@pytest.mark.parametrize(
    "env,fragment",
    [
        ({"SAGE_QUEUE_BACKEND": "bogus"}, "SAGE_QUEUE_BACKEND: unknown queue backend 'bogus'; valid values: auto, sage_queue"),
        ({"SAGE_QUEUE_MAXSIZE": "-1"}, "SAGE_QUEUE_MAXSIZE: expected a whole number >= 0"),
        ({"SAGE_QUEUE_MAXSIZE": "ten"}, "SAGE_QUEUE_MAXSIZE"),
        ({"SAGE_QUEUE_CAPACITY_BYTES": "0"}, "SAGE_QUEUE_CAPACITY_BYTES: expected a whole number > 0"),
        ({"SAGE_QUEUE_GET_TIMEOUT": "-2"}, "SAGE_QUEUE_GET_TIMEOUT"),
        ({"SAGE_QUEUE_BAKCEND": "sage"}, "unknown environment variable SAGE_QUEUE_BAKCEND"),
        ({"SAGE_QUEUE_CONFIG": "/nonexistent.toml"}, "SAGE_QUEUE_CONFIG: no such file"),
    ],
)
def test_bad_values_name_the_variable_and_the_valid_values(tmp_path, clean_env, env, fragment):
    with pytest.raises(ValueError) as err:
        load_config(environ=env, prefix=str(tmp_path))
    assert fragment in str(err.value)


def test_bad_file_values_name_the_file_and_key(tmp_path, clean_env):
    toml = tmp_path / "bad.toml"
    toml.write_text('[queue]\nmaxsize = -4\n')
    with pytest.raises(ValueError, match=r"bad.toml \[queue\] maxsize"):
        load_config(environ={"SAGE_QUEUE_CONFIG": str(toml)}, prefix=str(tmp_path))
    toml.write_text('[queue]\nmax_size = 4\n')
    with pytest.raises(ValueError, match="unknown \\[queue\\] keys \\['max_size'\\]"):
        load_config(environ={"SAGE_QUEUE_CONFIG": str(toml)}, prefix=str(tmp_path))
    toml.write_text('[queue\n')
    with pytest.raises(ValueError, match="invalid TOML"):
        load_config(environ={"SAGE_QUEUE_CONFIG": str(toml)}, prefix=str(tmp_path))


def test_bad_profile_backend_names_the_profile_file(tmp_path, clean_env):
    (tmp_path / "sage-profile.json").write_text('{"queue_backend": "mmap"}')
    with pytest.raises(ValueError, match="sage-profile.json"):
        load_config(environ={}, prefix=str(tmp_path))


def test_process_environment_is_read_by_default(clean_env, tmp_path):
    clean_env.setenv("SAGE_QUEUE_BACKEND", "python")
    assert load_config(prefix=str(tmp_path)).backend == "python_queue"


@pytest.mark.parametrize("key, raw", [
    ("maxsize", "4.7"), ("maxsize", "4.0"), ("capacity_bytes", "65536.5"), ("maxsize", "true"),
    ("get_timeout", "true"),
])
def test_a_toml_float_or_bool_where_a_number_of_the_other_kind_belongs_is_an_error(
        tmp_path, clean_env, key, raw):
    toml = tmp_path / "sage.toml"
    toml.write_text(f"[queue]\n{key} = {raw}\n")
    with pytest.raises(ValueError, match=rf"sage.toml \[queue\] {key}: expected .*got {raw.title() if raw == 'true' else raw}"):
        load_config(environ={}, prefix=str(tmp_path))


def test_a_toml_int_where_seconds_belong_is_fine(tmp_path, clean_env):
    (tmp_path / "sage.toml").write_text("[queue]\nput_timeout = 3\nget_timeout = 0.5\n")
    config = load_config(environ={}, prefix=str(tmp_path))
    assert (config.put_timeout, config.get_timeout) == (3.0, 0.5)
