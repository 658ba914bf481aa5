"""The repository root's conftest: being here, it puts the root on ``sys.path`` under pytest
(its default "prepend" import mode), so that tests import ``benchmarks.device_check`` as the
package it is, however pytest was started."""
