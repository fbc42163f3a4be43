"""What every command shares: flags generated from a typed config, and errors as one line.

Commands are also libraries (tests and the paper study import several of them), and absl
keeps one global flag registry, so no module defines flags when it is imported. A command's
`run()` defines its flags (most of them generated from its config dataclass, as
`define_config_flags` does), then hands its `main` to `run_command`, which turns a known,
user-facing error into one line on stderr and exit status 2, instead of a traceback.

A config field's flag help is `dataclasses.field(metadata={"help": ...})`; its default is the
field's default, so the dataclass is the one place a default is written.
"""

import collections.abc
import dataclasses
import errno
import sys
import typing
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Type, TypeVar

from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS
Config = TypeVar("Config")


class UserError(Exception):
  """An error the user can fix (a flag, a file, a missing step): one line, exit status 2."""


def field(default: Any, help_text: str, **metadata: Any) -> Any:
  """A config field with its flag help (and e.g. `choices`, `key=False`, `flag=False`); a list
  or tuple default becomes a tuple made fresh for each instance."""
  if isinstance(default, (list, tuple)):
    value = tuple(default)
    return dataclasses.field(default_factory=lambda: value,
                             metadata={"help": help_text, **metadata})
  return dataclasses.field(default=default, metadata={"help": help_text, **metadata})


def _flag_kind(field_type: Any) -> Any:
  """The absl define function for a field type (Optional[T] is T with default None)."""
  origin = typing.get_origin(field_type)
  if origin is typing.Union:
    args = [a for a in typing.get_args(field_type) if a is not type(None)]
    return _flag_kind(args[0])
  if origin in (list, tuple, collections.abc.Sequence) or field_type in (list, tuple):
    return flags.DEFINE_list
  return {int: flags.DEFINE_integer, float: flags.DEFINE_float, bool: flags.DEFINE_bool,
          str: flags.DEFINE_string}[field_type]


def _item_type(field_type: Any) -> Any:
  """The element type of a list-valued field (int for Sequence[int])."""
  origin = typing.get_origin(field_type)
  if origin is typing.Union:
    members = [a for a in typing.get_args(field_type) if a is not type(None)]
    return _item_type(members[0])
  args = typing.get_args(field_type)
  return args[0] if args else str


def _default(field: dataclasses.Field[Any]) -> Any:
  if field.default is not dataclasses.MISSING:
    value = field.default
  elif field.default_factory is not dataclasses.MISSING:
    value = field.default_factory()
  else:
    return None
  if isinstance(value, (list, tuple)):
    return [str(v) for v in value]
  return value


def define_config_flags(config_class: Type[Any], skip: Iterable[str] = ()) -> None:
  """Defines one flag per field of `config_class` (a dataclass), named like the field.

  Fields whose flag another part of the same command already defined are skipped, so two
  configs of one command may share a field (e.g. `world_dir`).
  """
  hints = typing.get_type_hints(config_class)
  for field in dataclasses.fields(config_class):
    if field.name in skip or field.name in FLAGS or not field.metadata.get("flag", True):
      continue
    define = _flag_kind(hints[field.name])
    help_text = field.metadata.get("help", f"{config_class.__name__}.{field.name}")
    if "choices" in field.metadata:
      flags.DEFINE_enum(field.name, _default(field), list(field.metadata["choices"]), help_text)
    else:
      define(field.name, _default(field), help_text)


def config_from_flags(config_class: Type[Config], **overrides: Any) -> Config:
  """An instance of `config_class` from the parsed flags; `overrides` win over flags."""
  hints = typing.get_type_hints(config_class)
  values: Dict[str, Any] = {}
  for field in dataclasses.fields(config_class):  # type: ignore[arg-type]
    if field.name in overrides:
      values[field.name] = overrides[field.name]
    elif field.name in FLAGS and field.metadata.get("flag", True):
      value = FLAGS[field.name].value
      if isinstance(value, list):
        value = [_parse_item(field.name, _item_type(hints[field.name]), v) for v in value]
      values[field.name] = value
  return config_class(**values)


def _parse_item(name: str, item_type: Any, text: str) -> Any:
  try:
    return item_type(text)
  except (TypeError, ValueError):
    type_name = getattr(item_type, "__name__", str(item_type))
    raise UserError(f"--{name}: {text!r} is not a valid {type_name}") from None


# The errors a user can fix: a command reports them as one line (`run_command`), and so does a
# trial worker running a stage job (`experiments.trial_pool`). Anything else is a bug and keeps
# its traceback.
EXPECTED_ERRORS: Tuple[Type[BaseException], ...] = (
    UserError, ValueError, FileNotFoundError, PermissionError, FileExistsError,
    NotADirectoryError, IsADirectoryError)


def error_message(error: BaseException) -> str:
  """The one line an expected error is reported as."""
  if isinstance(error, PermissionError):
    return f"permission denied: {error.filename or error}"
  if isinstance(error, (NotADirectoryError, IsADirectoryError)) and error.filename:
    return f"{error.filename}: {(error.strerror or str(error)).lower()}"
  return str(error)


def run_command(main: Callable[[], Optional[Any]], name: str,
                known_errors: Iterable[Type[BaseException]] = ()) -> Callable[[List[str]], None]:
  """An absl main for `main()`: refuses stray arguments; known errors become one line.

  EXPECTED_ERRORS (plus `known_errors`) are the errors a user can fix, and so is a full disk
  or a read-only filesystem (`storage_problem`, from Python or from TensorFlow); anything else
  is a bug and keeps its traceback.
  """
  expected = EXPECTED_ERRORS + tuple(known_errors)

  def absl_main(argv: List[str]) -> None:
    if len(argv) > 1:
      fail(name, f"unexpected arguments {argv[1:]}; every option is a --flag")
    try:
      main()
    except SystemExit:
      raise
    except Exception as error:  # noqa: BLE001 (a bug keeps its traceback: re-raised below)
      fail(name, one_line(error, expected))

  return absl_main


def one_line(error: Exception, expected: Tuple[Type[BaseException], ...]) -> str:
  """The message for an error a user can fix; re-raises any other error (a bug)."""
  problem = None if isinstance(error, UserError) else storage_problem(error)
  if problem is not None:
    return problem
  if not isinstance(error, expected):
    raise error
  return error_message(error)


# errno -> what the user is told; TensorFlow reports the same conditions in its own errors
# (ResourceExhaustedError, FailedPreconditionError...), whose message carries strerror's text.
STORAGE_ERRORS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                  errno.EROFS: "read-only file system"}
_STORAGE_TEXT = tuple(STORAGE_ERRORS.values())


def storage_problem(error: BaseException) -> Optional[str]:
  """'<what> writing <path>; <what to do>' for a full or read-only disk, else None. Works on
  OSError and on any error (TensorFlow's) whose message says so."""
  if isinstance(error, OSError) and error.errno in STORAGE_ERRORS:
    what = STORAGE_ERRORS[error.errno]
    path = error.filename or ""
  else:
    text = str(error)
    lowered = text.lower()
    what = next((w for w in _STORAGE_TEXT if w in lowered), "")
    if not what:
      return None
    path = getattr(error, "filename", None) or _path_in(text)
  where = f" writing {path}" if path else ""
  fix = ("remount it writable or choose another directory" if what == "read-only file system"
         else "free some space and rerun (a killed or failed run resumes where it stopped)")
  return f"{what}{where}; {fix}"


def _path_in(text: str) -> str:
  """The first absolute path in an error message ('' when there is none)."""
  for word in text.replace("'", " ").replace('"', " ").replace(";", " ").split():
    word = word.rstrip(":,.)")
    if word.startswith("/"):
      return word
  return ""


def fail(name: str, message: str) -> None:
  """Prints `name: error: message` and exits with status 2."""
  logging.flush()
  sys.stderr.write(f"{name}: error: {message}\n")
  sys.exit(2)


def start(main: Callable[[List[str]], None]) -> None:
  """app.run, the one way commands start (flags parsed, absl logging set up)."""
  app.run(main)
