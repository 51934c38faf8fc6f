"""A subscriber's credentials pass through rabbitmqctl's command line intact."""

from services.notifier.subscribers import Subscriber, create, new_password, permissions


def test_no_password_reads_as_an_option() -> None:
    # One URL-safe token in 64 starts with '-', which rabbitmqctl took for an option.
    passwords = {new_password() for _ in range(5000)}
    assert len(passwords) == 5000
    assert not [p for p in passwords if p.startswith("-")]
    assert all(len(p) == 48 for p in passwords)


def test_create_hands_rabbitmqctl_the_user_and_its_permissions(tmp_path) -> None:
    log = tmp_path / "calls"
    fake = tmp_path / "rabbitmqctl"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\n')
    fake.chmod(0o755)

    subscriber = create("billing", "boreas", [str(fake)])

    assert isinstance(subscriber, Subscriber)
    assert subscriber.queue_prefix == "sub.billing."
    configure, write, read = permissions("billing")
    assert log.read_text().splitlines() == [
        f"add_user sub-billing {subscriber.password}",
        f"set_permissions -p boreas sub-billing {configure} {write} {read}",
    ]
