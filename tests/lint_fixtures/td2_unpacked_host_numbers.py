"""TD201 and names unpacked from a call whose every return puts a host read at their place
(pytorch-soft-actor-critic: ``return qf1_loss.item(), ...`` then
``writer.add_scalar('loss/critic_1', critic_1_loss, updates)``): Python numbers, no sync."""
import torch.nn.functional as F


class Agent:
    def update_parameters(self, batch):
        q_loss = F.mse_loss(self.critic(batch), batch)
        pi_loss = -self.critic(self.policy(batch)).mean()
        self.opt.zero_grad()
        (q_loss + pi_loss).backward()
        self.opt.step()
        return q_loss.item(), pi_loss.item()  # expect: TD201

    def update_tensors(self, batch):
        q_loss = F.mse_loss(self.critic(batch), batch)
        q_loss.backward()
        self.opt.step()
        return q_loss, float(q_loss.detach())  # expect: TD201


def run(agent, memory, writer, steps):
    for step in range(steps):
        q_loss, pi_loss = agent.update_parameters(memory.sample())
        writer.add_scalar("loss/q", q_loss, step)  # (near miss: a Python number)
        writer.add_scalar("loss/pi", pi_loss, step)  # (near miss)
        t_loss, t_value = agent.update_tensors(memory.sample())
        writer.add_scalar("loss/t", t_loss, step)  # expect: TD201
        writer.add_scalar("loss/v", t_value, step)  # (near miss: float() at its return)
