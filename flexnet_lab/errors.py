"""Typed errors raised by the library. Only the CLI turns them into messages and exit codes."""


class FlexNetError(Exception):
    """Base of every error the lab raises on purpose. `released`: devices whose prepared
    (never committed) new version was let go when the error stopped a change."""

    released: tuple[str, ...] = ()


class TopologyError(FlexNetError):
    """A topology file or object is malformed; names the file and the field."""

    def __init__(self, source: str, field: str, message: str):
        self.source = source
        self.field = field
        self.message = message
        super().__init__(f"{source}: {field}: {message}")


class ProgramError(FlexNetError):
    """A program in the model is invalid; names the element."""

    def __init__(self, element: str, message: str):
        self.element = element
        self.message = message
        super().__init__(f"{element}: {message}")


class DeltaError(FlexNetError):
    """A delta cannot apply to the running program; names the element."""

    def __init__(self, element: str, message: str):
        self.element = element
        self.message = message
        super().__init__(f"{element}: {message}")


class CompileError(FlexNetError):
    """A backend could not compile a program (clang or p4c failed)."""


class TargetError(FlexNetError):
    """A device refused an operation; names the device and what was refused."""

    def __init__(self, device: str, message: str):
        self.device = device
        self.message = message
        super().__init__(f"{device}: {message}")


class EntryError(TargetError):
    """A device refused a table entry; names the device, the table and the entry."""

    def __init__(self, device: str, table: str, entry: str, message: str):
        self.table, self.entry = table, entry
        super().__init__(device, f"table {table}, entry {entry}: {message}")


class VerifierError(TargetError):
    """The kernel's BPF verifier rejected a program; carries the verifier log."""

    def __init__(self, device: str, message: str, log: str = ""):
        self.log = log
        super().__init__(device, message)


class EnvironmentMissing(FlexNetError):
    """Something the lab needs is not installed; names what to install."""


class LabError(FlexNetError):
    """The lab could not be brought up, changed or torn down."""


class ScenarioError(FlexNetError):
    """A scenario file is malformed; names the file and the field."""

    def __init__(self, source: str, field: str, message: str):
        self.source = source
        self.field = field
        self.message = message
        super().__init__(f"{source}: {field}: {message}")


class AppError(FlexNetError):
    """An app operation is refused (malformed URI, unknown app, no room); names the app."""

    def __init__(self, app: str, message: str):
        self.app = app
        self.message = message
        super().__init__(f"{app}: {message}")


class ControlError(FlexNetError):
    """The controller cannot be reached or answered with an error of its own."""


class StoreError(FlexNetError):
    """The intent store cannot be opened or written."""


class OptionError(FlexNetError):
    """A command-line option is unusable (a path that cannot be written, a value out of
    range, a combination a target cannot run); names the option."""

    def __init__(self, option: str, message: str):
        self.option = option
        self.message = message
        super().__init__(f"{option}: {message}")


class ObjectError(FlexNetError):
    """A compiled eBPF object (ELF) cannot run where it was asked to: not ELF, no such
    section, a program type the hook cannot run, maps that do not fit, or the verifier
    refused it. Names the file and the field; `log` holds the verifier's log if any."""

    def __init__(self, source: str, field: str, message: str, log: str = ""):
        self.source = source
        self.field = field
        self.message = message
        self.log = log
        super().__init__(f"{source}: {field}: {message}")


class P4FileError(FlexNetError):
    """A user's P4 program or its runtime JSON cannot run: p4c refused the source, or the
    runtime file names a table, field, action or value the program does not have. Names
    the file and the field (`table_entries[2].match.hdr.ipv4.dstAddr`, `line 42`)."""

    def __init__(self, source: str, field: str, message: str):
        self.source = source
        self.field = field
        self.message = message
        super().__init__(f"{source}: {field}: {message}")
