/**
 * hana in JupyterLab: a sidebar of the model server's runners, a status-bar item that opens it,
 * and palette commands. One `HanaModel` per page feeds all three.
 *
 * Only the application itself is required: the status bar, palette and layout restorer are
 * optional, so Notebook 7 and other shells without a status bar still get the sidebar and the
 * commands.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, InputDialog } from '@jupyterlab/apputils';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import hanaSvg from '../style/hana.svg';
import { HanaModel } from './model';
import { HanaPanel } from './panel';
import { summary } from './state';

export const hanaIcon = new LabIcon({ name: 'hana:icon', svgstr: hanaSvg });

export namespace CommandIDs {
  export const open = 'hana:open-panel';
  export const warm = 'hana:warm-up';
  export const unloadAll = 'hana:unload-all';
}

const PANEL_ID = 'hana-panel';

/** "hana: 2 loaded · 1 busy"; a click opens the sidebar. */
class StatusItem extends Widget {
  constructor(
    private _hana: HanaModel,
    onClick: () => void
  ) {
    super();
    this.addClass('jp-hana-statusbar');
    this.node.title = 'hana model server: click to open the panel';
    this.node.onclick = onClick;
    _hana.changed.connect(this._render, this);
    this._render();
  }

  private _render(): void {
    const text = summary(this._hana.state);
    if (this.node.textContent !== text) {
      this.node.textContent = text;
    }
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'hana-jupyter:plugin',
  description:
    'The hana model server in JupyterLab: runners sidebar, status bar, commands.',
  autoStart: true,
  optional: [ICommandPalette, ILayoutRestorer, IStatusBar],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    statusBar: IStatusBar | null
  ) => {
    const hana = new HanaModel(app.serviceManager.serverSettings);
    const panel = new HanaPanel(hana);
    panel.id = PANEL_ID;
    panel.title.icon = hanaIcon;
    panel.title.caption = 'hana: local models';
    app.shell.add(panel, 'right', { rank: 600 });
    restorer?.add(panel, PANEL_ID);

    const { commands } = app;
    commands.addCommand(CommandIDs.open, {
      label: 'hana: Open the Model Panel',
      caption: 'Show the hana sidebar',
      execute: () => app.shell.activateById(PANEL_ID)
    });
    commands.addCommand(CommandIDs.warm, {
      label: 'hana: Warm Up a Model…',
      execute: async (args: { model?: string }) => {
        let model = args.model;
        if (!model) {
          const items = hana.state.installed;
          const answer = await InputDialog.getItem({
            title: 'Warm up a model',
            items,
            current: items[0]
          });
          model = answer.button.accept
            ? (answer.value ?? undefined)
            : undefined;
        }
        if (model) {
          app.shell.activateById(PANEL_ID);
          await hana.warm(model).catch(() => undefined); // shown on the model's row
        }
      }
    });
    commands.addCommand(CommandIDs.unloadAll, {
      label: 'hana: Unload All Models',
      isEnabled: () => hana.state.runners.size > 0,
      execute: () => hana.unloadAll().catch(() => undefined)
    });
    for (const command of Object.values(CommandIDs)) {
      palette?.addItem({ command, category: 'hana' });
    }

    if (statusBar) {
      const item = new StatusItem(hana, () => app.shell.activateById(PANEL_ID));
      statusBar.registerStatusItem('hana-jupyter:status', {
        item,
        align: 'left',
        rank: 4
      });
    }

    hana.start();
    console.log('hana-jupyter: labextension activated');
  }
};

export default plugin;
